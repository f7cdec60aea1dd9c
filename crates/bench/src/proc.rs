//! Process facts from Linux procfs: resident memory and the open-file limit.

use anyhow::Context;

/// Resident memory of a process, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resident {
    /// All resident pages (`VmRSS`).
    pub(crate) total: u64,
    /// Resident anonymous pages (`RssAnon`): heap, stacks and other private memory,
    /// without the pages of the executable and the libraries mapped from files.
    pub(crate) anon: u64,
}

/// Reads the resident memory of process `pid`, or of this process for `None`.
pub(crate) fn resident(pid: Option<u32>) -> anyhow::Result<Resident> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {path}: is the process id correct?"))?;
    let total = parse_kilobytes(&status, "VmRSS:")
        .with_context(|| format!("{path} has no valid VmRSS line"))?;
    let anon = parse_kilobytes(&status, "RssAnon:")
        .with_context(|| format!("{path} has no valid RssAnon line"))?;
    Ok(Resident { total, anon })
}

/// Parses a `NAME:   1234 kB` line of a `/proc/PID/status` file, in bytes.
fn parse_kilobytes(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    let mut fields = line[name.len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next()? {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

/// Reads the soft limit on open files of this process from `/proc/self/limits`.
/// Returns `None` when it is unlimited or cannot be read.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_as_kilobytes() {
        let status = "Name:\tpylon\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\n\
                      RssAnon:\t    1024 kB\nRssFile:\t    4096 kB\nThreads:\t3\n";
        assert_eq!(parse_kilobytes(status, "VmRSS:"), Some(5120 * 1024));
        assert_eq!(parse_kilobytes(status, "RssAnon:"), Some(1024 * 1024));
        assert_eq!(parse_kilobytes("Name:\tkthreadd\n", "VmRSS:"), None);
        assert_eq!(parse_kilobytes("VmRSS:\t12 MB\n", "VmRSS:"), None);
    }

    #[test]
    fn own_resident_memory_is_read() {
        let own = resident(None).unwrap();
        assert!(own.anon > 0);
        assert!(own.total >= own.anon);
    }

    #[test]
    fn open_files_limit_parses_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(20000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), None);
    }
}
