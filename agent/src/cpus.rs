//! How many CPUs this process may really use: its affinity mask
//! (`sched_getaffinity`) and the CPU quota of its cgroup v2 (`cpu.max` of its
//! own cgroup and every ancestor up to the mount). A DaemonSet pod with a CPU
//! limit of 2 on a 64-core node gets 2, not 64.
//!
//! The default of `--worker-threads` (the tokio runtime's worker count).
//! Only cgroup v2 quotas are read; on a cgroup v1 host only the affinity mask
//! counts.
use std::path::{Path, PathBuf};

/// What limits this process's CPUs, as found at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBudget {
    /// CPUs in the affinity mask (`None`: could not be read).
    pub affinity: Option<usize>,
    /// The tightest cgroup v2 quota in CPUs (`quota / period` of `cpu.max`)
    /// on the path from the process's cgroup to the root, and the cgroup
    /// directory that sets it. `None`: no quota (`max`) or no cgroup v2.
    pub quota: Option<(f64, PathBuf)>,
    /// The host's online CPUs, for the log line.
    pub host: usize,
}

impl CpuBudget {
    /// Reads the affinity mask, `/proc/self/cgroup`, `/proc/self/mountinfo`
    /// and the `cpu.max` files.
    pub fn detect() -> Self {
        let host = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|s| count_cpu_list(&s))
            .unwrap_or(1);
        let quota = (|| {
            let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            let dir = cgroup_v2_dir(&cgroup, &mountinfo)?;
            tightest_quota(&dir.mount, &dir.own, |p| std::fs::read_to_string(p).ok())
        })();
        Self {
            affinity: affinity_cpus(),
            quota,
            host,
        }
    }

    /// Worker threads for this budget: the affinity count, lowered to the
    /// whole CPUs of the quota (rounded down: a thread more than the quota
    /// only gets throttled), at least 1.
    pub fn threads(&self) -> usize {
        let mut n = self.affinity.unwrap_or(self.host);
        if let Some((cpus, _)) = &self.quota {
            n = n.min(cpus.floor() as usize);
        }
        n.max(1)
    }
}

/// The CPUs in this thread's affinity mask.
fn affinity_cpus() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        usize::try_from(libc::CPU_COUNT(&set))
            .ok()
            .filter(|n| *n > 0)
    }
}

/// Counts a kernel CPU list such as `0-3,8,10-11`.
pub fn count_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// Parses a cgroup v2 `cpu.max` (`$MAX $PERIOD`, `$MAX` may be `max`):
/// the quota in CPUs, `None` without a limit or for anything unparsable.
pub fn parse_cpu_max(content: &str) -> Option<f64> {
    let mut it = content.split_whitespace();
    let max = it.next()?;
    // The period defaults to 100 ms when only the maximum was written.
    let period: u64 = it.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if max == "max" || period == 0 {
        return None;
    }
    let max: u64 = max.parse().ok()?;
    Some(max as f64 / period as f64)
}

/// The process's cgroup v2 directory: where the hierarchy is mounted and the
/// process's own directory under it.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupDir {
    pub mount: PathBuf,
    pub own: PathBuf,
}

/// Finds the process's own cgroup v2 directory from `/proc/self/cgroup` (the
/// `0::PATH` line) and `/proc/self/mountinfo` (a `cgroup2` mount whose root
/// is PATH or one of its ancestors).
pub fn cgroup_v2_dir(proc_cgroup: &str, mountinfo: &str) -> Option<CgroupDir> {
    let path = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim();
    // "(deleted)" or other non-absolute forms: nothing to read.
    if !path.starts_with('/') {
        return None;
    }
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        let (root, mount) = (*f.get(3)?, *f.get(4)?);
        let rel = if root == "/" {
            path
        } else {
            let rest = path.strip_prefix(root)?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let mount = PathBuf::from(unescape_mountinfo(mount));
        let own = mount.join(rel.trim_start_matches('/'));
        Some(CgroupDir { mount, own })
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The smallest quota of `own` and its ancestors up to and including `mount`
/// (the root has no `cpu.max`; a missing file is no limit).
pub fn tightest_quota(
    mount: &Path,
    own: &Path,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<(f64, PathBuf)> {
    let mut best: Option<(f64, PathBuf)> = None;
    let mut dir = Some(own);
    while let Some(d) = dir {
        if !d.starts_with(mount) {
            break;
        }
        if let Some(q) = read(&d.join("cpu.max")).as_deref().and_then(parse_cpu_max) {
            if best.as_ref().is_none_or(|(b, _)| q < *b) {
                best = Some((q, d.to_path_buf()));
            }
        }
        if d == mount {
            break;
        }
        dir = d.parent();
    }
    best
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn cpu_max_is_parsed() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("50000 100000"), Some(0.5));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(
            parse_cpu_max("300000"),
            Some(3.0),
            "period defaults to 100 ms"
        );
        for bad in ["", "x 100000", "100000 0", "100000 y"] {
            assert_eq!(parse_cpu_max(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-3,8,10-11\n"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
    }

    const MOUNTINFO: &str = "\
22 1 259:2 / / rw,relatime - ext4 /dev/root rw
31 23 0:28 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup cgroup rw,cpu
";

    #[test]
    fn own_cgroup_directory_is_found() {
        let dir = cgroup_v2_dir(
            "0::/kubepods.slice/kubepods-pod1.slice/cri-abc.scope\n",
            MOUNTINFO,
        )
        .unwrap();
        assert_eq!(dir.mount, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            dir.own,
            Path::new("/sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/cri-abc.scope")
        );
        // Hybrid host: the v1 lines are ignored, the unified mount is used.
        let hybrid = "12:cpu,cpuacct:/x\n0::/user.slice\n";
        let mi = "40 31 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_v2_dir(hybrid, mi).unwrap().own,
            Path::new("/sys/fs/cgroup/unified/user.slice")
        );
        // A container whose mount shows only its own subtree.
        let mi = "40 31 0:37 /kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_v2_dir("0::/kubepods/pod1/c1\n", mi).unwrap().own,
            Path::new("/sys/fs/cgroup/c1")
        );
        assert!(cgroup_v2_dir("0::/kubepods/pod10/c1\n", mi).is_none());
        // Mount point with an escaped space.
        let mi = "40 31 0:37 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_v2_dir("0::/a\n", mi).unwrap().own,
            Path::new("/mnt/cg two/a")
        );
        // No cgroup v2 at all.
        assert!(cgroup_v2_dir("4:memory:/x\n", MOUNTINFO).is_none());
        assert!(cgroup_v2_dir("0::/x\n", "22 1 259:2 / / rw - ext4 /dev/root rw\n").is_none());
    }

    #[test]
    fn the_tightest_quota_on_the_path_to_the_root_wins() {
        let files: HashMap<&str, &str> = [
            ("/cg/pods/cpu.max", "400000 100000"),
            ("/cg/pods/pod1/cpu.max", "150000 100000"),
            ("/cg/pods/pod1/c1/cpu.max", "max 100000"),
        ]
        .into();
        let read = |p: &Path| files.get(p.to_str().unwrap()).map(|s| s.to_string());
        let q = tightest_quota(Path::new("/cg"), Path::new("/cg/pods/pod1/c1"), read).unwrap();
        assert_eq!(q, (1.5, PathBuf::from("/cg/pods/pod1")));
        assert_eq!(
            tightest_quota(Path::new("/cg"), Path::new("/cg/other"), read),
            None
        );
    }

    #[test]
    fn threads_follow_affinity_and_whole_quota_cpus() {
        let b = |affinity, quota: Option<f64>| CpuBudget {
            affinity,
            quota: quota.map(|q| (q, PathBuf::from("/cg"))),
            host: 64,
        };
        assert_eq!(b(Some(8), None).threads(), 8);
        assert_eq!(b(None, None).threads(), 64, "no mask: the host's CPUs");
        assert_eq!(b(Some(8), Some(2.0)).threads(), 2);
        assert_eq!(b(Some(8), Some(1.5)).threads(), 1, "rounded down");
        assert_eq!(b(Some(8), Some(0.25)).threads(), 1, "at least one");
        assert_eq!(b(Some(1), Some(4.0)).threads(), 1);
    }

    #[test]
    fn detect_gives_a_usable_count() {
        let b = CpuBudget::detect();
        assert!(b.threads() >= 1);
        assert!(b.threads() <= b.host.max(b.affinity.unwrap_or(1)));
    }
}
