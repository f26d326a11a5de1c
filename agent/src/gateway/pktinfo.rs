//! Which local address a datagram was sent to, and replying from it: a UDP
//! listener bound on the wildcard address (a Gateway without addresses)
//! receives datagrams for every address of the node, but a reply sent with
//! `send_to` leaves from whichever address the kernel's route lookup picks.
//! On a node with several addresses a client that sent to one of them then
//! gets the answer from another, and a connected client socket (as DNS
//! resolvers use) drops it. So a wildcard socket asks for `IP_PKTINFO` /
//! `IPV6_PKTINFO` with each datagram, and replies carry the same ancillary
//! data naming the source address (RFC 1122 §4.1.3.5: reply from the
//! address the request was sent to).
use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
    ptr,
};

use socket2::SockAddr;

/// Room for one pktinfo control message of either family, aligned for
/// `cmsghdr`.
type Control = [u64; 8];

/// Asks the kernel to report each received datagram's destination address
/// (`socket` is bound on `local`, a wildcard address).
pub(super) fn enable(socket: &impl AsRawFd, local: SocketAddr) -> io::Result<()> {
    let (level, name) = match local {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor, an int option of the size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            ptr::from_ref(&on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One `recvmsg` without waiting: the datagram's length, its sender and the
/// local address it was sent to (when the socket reports it).
pub(super) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: plain C structs, all-zero is a valid value of each.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut control: Control = [0; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = ptr::from_mut(&mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<Control>();
    // SAFETY: every pointer in `msg` points at a live buffer of the length
    // it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote an address of `msg_namelen` bytes.
    let peer = unsafe { SockAddr::new(name, msg.msg_namelen) }
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP sender"))?;
    Ok((n as usize, peer, destination(&msg)))
}

/// The destination address of the pktinfo control message in `msg`.
fn destination(msg: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: `msg` is the header `recvmsg` filled in; the CMSG macros stay
    // within `msg_controllen`, and the data is read unaligned at the size of
    // the struct its level and type say it holds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info: libc::in_pktinfo = ptr::read_unaligned(data.cast());
                    return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info: libc::in6_pktinfo = ptr::read_unaligned(data.cast());
                    return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// The address to answer from: the one the client sent to, unless that was
/// a broadcast or multicast address (not a source); `None` lets the kernel
/// choose.
pub(super) fn reply_source(destination: Option<IpAddr>) -> Option<IpAddr> {
    destination.filter(|ip| match ip {
        IpAddr::V4(v4) => !(v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    })
}

/// One `sendmsg` without waiting, from `source` when given.
pub(super) fn send(
    fd: RawFd,
    buf: &[u8],
    to: SocketAddr,
    source: Option<IpAddr>,
) -> io::Result<usize> {
    let to = SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    let mut control: Control = [0; 8];
    // SAFETY: a plain C struct; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = to.as_ptr().cast_mut().cast();
    msg.msg_namelen = to.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(source) = source {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: `control` holds CMSG_SPACE of either pktinfo struct (at
        // most 40 bytes of 64); the header and data are written within it.
        unsafe {
            let (level, kind, len) = match source {
                IpAddr::V4(_) => (
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    size_of::<libc::in_pktinfo>(),
                ),
                IpAddr::V6(_) => (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    size_of::<libc::in6_pktinfo>(),
                ),
            };
            msg.msg_controllen = libc::CMSG_SPACE(len as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = level;
            (*c).cmsg_type = kind;
            (*c).cmsg_len = libc::CMSG_LEN(len as u32) as usize;
            let data = libc::CMSG_DATA(c);
            match source {
                IpAddr::V4(v4) => {
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(v4).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    ptr::write_unaligned(data.cast(), info);
                }
                IpAddr::V6(v6) => {
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: v6.octets(),
                        },
                        ipi6_ifindex: 0,
                    };
                    ptr::write_unaligned(data.cast(), info);
                }
            }
        }
    }
    // SAFETY: every pointer in `msg` points at a live buffer of the length
    // it states.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_and_multicast_destinations_are_not_sources() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(reply_source(ip("10.0.0.7")), ip("10.0.0.7"));
        assert_eq!(reply_source(ip("2001:db8::7")), ip("2001:db8::7"));
        assert_eq!(reply_source(ip("255.255.255.255")), None);
        assert_eq!(reply_source(ip("224.0.0.251")), None);
        assert_eq!(reply_source(ip("ff02::fb")), None);
        assert_eq!(reply_source(None), None);
    }

    #[test]
    fn the_destination_is_reported_and_replies_leave_from_it() {
        let server = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let local = server.local_addr().unwrap();
        enable(&server, local).unwrap();
        for target in ["127.0.0.2", "127.0.0.1"] {
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            client.connect((target, local.port())).unwrap();
            client.send(b"ping").unwrap();
            server
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            // Wait for the datagram, then read it without blocking.
            let mut peek = [0u8; 1];
            server.peek_from(&mut peek).unwrap();
            let mut buf = [0u8; 16];
            let (n, peer, dst) = recv(server.as_raw_fd(), &mut buf).unwrap();
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(dst, Some(target.parse().unwrap()));
            send(server.as_raw_fd(), b"pong", peer, reply_source(dst)).unwrap();
            // The connected client drops anything not from `target`.
            let n = client
                .recv(&mut buf)
                .expect("the reply comes from the address asked");
            assert_eq!(&buf[..n], b"pong");
        }
    }
}
