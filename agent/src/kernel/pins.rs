//! Pinned state in bpffs, so that a restarted agent takes over instead of
//! starting cold: the maps (with the SockMap of shard sockets) and the XDP links
//! live under `<bpffs>/sluice/<netns inode>/`. The `OWNER` map says which agent
//! process owns them; only the owner cleans them up when it stops for good.
use std::{
    ffi::CString,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::KernelError;

/// Maps pinned by name in the pin directory.
pub const PINNED_MAPS: [&str; 13] = [
    "LISTENERS",
    "SOURCE_RULES",
    "SHARD_SOCKETS",
    "COUNTERS",
    "SYN_BUDGET",
    "OWNER",
    "SOURCE_NS",
    "CGROUP_NS",
    "ADMISSION",
    "PORT_RANGES",
    "SOCK_PAIRS",
    "FASTPATH_COUNTERS",
    // Penalties survive an agent restart (the new agent adopts them).
    "PENALTY",
];

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Io { what, source }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// The pin directory for this network namespace under `bpffs`, created if
/// needed. Mounts a bpf filesystem at `bpffs` when none is mounted there.
pub fn pin_dir(bpffs: &Path) -> Result<PathBuf, KernelError> {
    if !is_bpffs(bpffs) {
        std::fs::create_dir_all(bpffs).map_err(io(format!("creating {}", bpffs.display())))?;
        let target = CString::new(bpffs.as_os_str().as_encoded_bytes())
            .map_err(|e| io("bpffs path")(std::io::Error::other(e)))?;
        // SAFETY: all arguments are valid NUL-terminated strings; no data pointer.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io(format!(
                "no bpf filesystem at {} and mounting one failed (mount it, or pass --bpffs)",
                bpffs.display()
            ))(std::io::Error::last_os_error()));
        }
        tracing::info!(path = %bpffs.display(), "mounted a bpf filesystem");
    }
    let netns = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(io("reading the network namespace inode"))?
        .ino();
    let dir = bpffs.join("sluice").join(netns.to_string());
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Where the XDP link of an interface is pinned.
pub fn xdp_link_path(dir: &Path, ifindex: u32) -> PathBuf {
    dir.join(format!("xdp_link_{ifindex}"))
}

/// Where the network namespace's `sk_lookup_dispatch` link is pinned.
pub fn sk_lookup_link_path(dir: &Path) -> PathBuf {
    dir.join("sk_lookup_link")
}

/// Removes the pinned datapath of the calling thread's network namespace
/// under `bpffs` (`sluice detach`): links detach and maps are freed once no
/// running agent holds them. Returns the directory, if there was one.
pub fn detach(bpffs: &Path) -> std::io::Result<Option<PathBuf>> {
    let netns = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    let dir = bpffs.join("sluice").join(netns.to_string());
    if !dir.exists() {
        return Ok(None);
    }
    remove_all(&dir);
    Ok(Some(dir))
}

/// Removes every pin in `dir` and the directory. Objects whose last reference
/// was the pin (maps, links) are freed by the kernel — links detach.
pub fn remove_all(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove pin");
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
