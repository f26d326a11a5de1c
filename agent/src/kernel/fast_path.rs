//! Attaching the opt-in sockmap fast path: `msg_redirect` on the `SOCK_PAIRS`
//! socket hash, then `sockops_track` on the cgroup (in this order, because a
//! socket gets the map's sk_msg program when it is inserted, not later).
//!
//! Both stay attached while the `Ebpf` handle lives. The map is pinned with the
//! others, so a successor agent attaches its own `msg_redirect` to the same map
//! (replacing ours) and keeps redirecting between sockets tracked by either.
use std::path::Path;

use aya::{
    maps::{MapData, SockHash},
    programs::{CgroupAttachMode, SkMsg, SockOps},
    Ebpf,
};
use sluice_common::SockPairKey;

use super::KernelError;

/// Attaches both programs; `cgroup` is where sockets are tracked.
pub(super) fn attach(ebpf: &mut Ebpf, cgroup: Option<&Path>) -> Result<(), KernelError> {
    let Some(cgroup) = cgroup else {
        return Err(KernelError::Io {
            what: "sockmap fast path (sockops_track): no cgroup v2 hierarchy mounted to attach \
                   it to (pass --cgroup)"
                .into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    };
    let map_fd = {
        let map = ebpf
            .map("SOCK_PAIRS")
            .ok_or(KernelError::MissingMap("SOCK_PAIRS"))?;
        let hash: SockHash<&MapData, SockPairKey> =
            map.try_into().map_err(|source| KernelError::Map {
                map: "SOCK_PAIRS",
                action: "open".into(),
                source,
            })?;
        hash.fd().try_clone().map_err(|source| KernelError::Io {
            what: "duplicating the SOCK_PAIRS fd".into(),
            source,
        })?
    };

    let msg_err = |action: &str, source| KernelError::Program {
        program: "msg_redirect",
        action: action.to_owned(),
        source,
    };
    let msg: &mut SkMsg = ebpf
        .program_mut("msg_redirect")
        .ok_or(KernelError::MissingMap("msg_redirect program"))?
        .try_into()
        .map_err(|e| msg_err("open", e))?;
    msg.load().map_err(|e| msg_err("load (sk_msg)", e))?;
    msg.attach(&map_fd)
        .map_err(|e| msg_err("attach to the SOCK_PAIRS socket hash", e))?;

    let ops_err = |action: &str, source| KernelError::Program {
        program: "sockops_track",
        action: action.to_owned(),
        source,
    };
    let file = std::fs::File::open(cgroup).map_err(|source| KernelError::Io {
        what: format!("opening cgroup {}", cgroup.display()),
        source,
    })?;
    let ops: &mut SockOps = ebpf
        .program_mut("sockops_track")
        .ok_or(KernelError::MissingMap("sockops_track program"))?
        .try_into()
        .map_err(|e| ops_err("open", e))?;
    ops.load().map_err(|e| ops_err("load (sock_ops)", e))?;
    ops.attach(&file, CgroupAttachMode::Single)
        .map_err(|e| ops_err(&format!("attach to cgroup {}", cgroup.display()), e))?;
    tracing::info!(
        cgroup = %cgroup.display(),
        "sockmap fast path attached: sockops_track on the cgroup, msg_redirect on SOCK_PAIRS"
    );
    Ok(())
}
