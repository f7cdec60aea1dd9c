//! `pylon cert`: writes a self-signed development certificate for `pylon serve --tls-cert`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Options of `pylon cert`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct CertArgs {
    /// Directory to write cert.pem and key.pem to. It is created if missing. Existing files
    /// are not overwritten.
    #[arg(long)]
    pub(crate) out: PathBuf,
}

/// Generates a certificate for localhost, 127.0.0.1 and ::1 and writes cert.pem and
/// key.pem to `--out`.
pub(crate) fn run(args: &CertArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("failed to create directory {}", args.out.display()))?;
    let cert = pylon_ws::tls::self_signed_localhost()?;
    let cert_path = args.out.join("cert.pem");
    let key_path = args.out.join("key.pem");
    write_new(&cert_path, cert.cert_pem.as_bytes(), 0o644)?;
    write_new(&key_path, cert.key_pem.as_bytes(), 0o600)?;
    println!("certificate: {}", cert_path.display());
    println!("private key: {}", key_path.display());
    println!("names: {}", pylon_ws::tls::LOCALHOST_NAMES.join(", "));
    println!("SHA-256 fingerprint: {}", cert.sha256_fingerprint());
    println!(
        "serve with: pylon serve --tls-cert {} --tls-key {}",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

/// Writes `contents` to a file that must not exist yet, with Unix permissions `mode`.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).with_context(|| {
        format!(
            "failed to create {} (remove it first to write a new certificate)",
            path.display()
        )
    })?;
    file.write_all(contents)
        .with_context(|| format!("failed to write {}", path.display()))
}
