//! Where the runner, its echo servers and the agents it starts live.
//!
//! Upstream's expectations name the manifests' listener ports: a redirect
//! from a Gateway listening on 80 carries no port in `Location`, a `Host`
//! header omits the implied port. To compare exactly as upstream does, the
//! runner enters a private network namespace of its own (as root), where
//! ports 80, 443, 8080, ... are free and nothing else listens: the agents
//! bind the manifests' ports unchanged. Without the privilege the listeners
//! are moved up by a port offset on the host's loopback instead, and the
//! tests whose expectations depend on the port (redirects) cannot pass.
use std::io;

/// The network the runner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A private network namespace: listeners keep the manifests' ports.
    Private,
    /// The host's network: listeners are moved up by the port offset.
    Host,
}

impl Network {
    /// Port offset used when none is given on the command line.
    pub fn default_port_offset(self) -> u16 {
        match self {
            Network::Private => 0,
            Network::Host => 20_000,
        }
    }

    /// One line for the report.
    pub fn describe(self, port_offset: u16) -> String {
        match (self, port_offset) {
            (Network::Private, 0) => {
                "private network namespace, listeners on the manifests' ports".into()
            }
            (Network::Private, o) => {
                format!("private network namespace, listener ports moved up by {o}")
            }
            (Network::Host, o) => format!("host network, listener ports moved up by {o}"),
        }
    }
}

/// Moves the calling thread (and every thread and process it starts
/// afterwards) into a new network namespace with only `lo`, brought up (so
/// that 127.0.0.0/8 and ::1 work). Call it before any other thread exists:
/// threads started earlier stay in the old namespace. The namespace goes
/// away with the last process in it, so there is nothing to clean up.
pub fn enter_private_namespace() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET only affects this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    loopback_up()
}

/// `ip link set lo up`, with the SIOCSIFFLAGS ioctl.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation; the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: `req` is a valid ifreq naming an interface; the kernel
        // writes the flags into it.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        }
        // SAFETY: as above; the kernel only reads `req`.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_descriptions() {
        assert_eq!(Network::Private.default_port_offset(), 0);
        assert_eq!(Network::Host.default_port_offset(), 20_000);
        assert!(Network::Private.describe(0).contains("manifests' ports"));
        assert!(Network::Host.describe(20_000).contains("20000"));
    }
}
