//! Shared command-line handling of the peer echo servers.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};

/// Parses `--port PORT` from the process arguments and returns the loopback address to listen on.
///
/// Every peer binds to 127.0.0.1 only, because the benchmark never leaves the machine.
pub fn listen_addr() -> anyhow::Result<SocketAddr> {
    let mut args = std::env::args().skip(1);
    let mut port = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().context("missing value for --port")?;
                let parsed: u16 = value
                    .parse()
                    .with_context(|| format!("invalid --port {value:?}: expected 1-65535"))?;
                port = Some(parsed);
            }
            other => bail!("unknown argument {other:?}; usage: --port PORT"),
        }
    }
    let port = port.context("missing --port PORT")?;
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}
