//! A packet flood for benchmarks: pre-built TCP SYN frames sent through an
//! AF_PACKET socket on an interface inside a test network namespace. Bounded
//! by a packet count; only ever sent on a veth the benchmark created.
use std::{net::Ipv4Addr, os::fd::AsRawFd as _};

/// One frame: Ethernet + IPv4 + TCP SYN, with a valid IPv4 header checksum
/// (the kernel checks it before netfilter; XDP does not care).
pub fn syn_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let mut sum: u32 = f[ip_start..ip_start + 20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

/// Sends `count` copies of `frame` (varying the TCP source port) on `ifname`,
/// from a thread that first enters the network namespace `netns` and pins
/// itself to `cpu`. Returns the number of frames the kernel accepted.
pub fn flood(
    netns: &str,
    ifname: &str,
    frame: &[u8],
    count: u64,
    cpu: usize,
) -> std::io::Result<u64> {
    let netns = netns.to_owned();
    let ifname = ifname.to_owned();
    let frame = frame.to_vec();
    std::thread::spawn(move || -> std::io::Result<u64> {
        let ns = std::fs::File::open(format!("/run/netns/{netns}"))?;
        // SAFETY: setns/sched_setaffinity/socket/bind/send act on this thread
        // and on fds it owns; buffers outlive the calls.
        unsafe {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let name = std::ffi::CString::new(ifname).unwrap();
            let ifindex = libc::if_nametoindex(name.as_ptr());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            if libc::bind(
                fd,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&addr) as u32,
            ) != 0
            {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                return Err(e);
            }
            let mut buf = frame;
            let mut sent = 0u64;
            for i in 0..count {
                let sport = 10_000 + (i % 50_000) as u16;
                buf[34..36].copy_from_slice(&sport.to_be_bytes());
                if libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) > 0 {
                    sent += 1;
                }
            }
            libc::close(fd);
            Ok(sent)
        }
    })
    .join()
    .expect("flood thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_and_checksum() {
        let f = syn_frame(
            [1; 6],
            [2; 6],
            Ipv4Addr::new(10, 0, 0, 3),
            Ipv4Addr::new(10, 0, 0, 2),
            1234,
            8080,
        );
        assert_eq!(f.len(), 54);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        // A correct header sums to 0xffff including its checksum.
        let mut sum: u32 = f[14..34]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 8080);
        assert_eq!(f[47], 0x02, "SYN");
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
    }
}
