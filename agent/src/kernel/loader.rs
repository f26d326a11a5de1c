//! Loading the eBPF object, attaching `xdp_ingress` to interfaces and
//! `sk_lookup_dispatch` to the network namespace, and owning the maps.
//! Dropping [`KernelDatapath`] detaches every program it attached.
use std::{collections::BTreeMap, os::fd::AsRawFd, path::PathBuf};

use aya::{
    maps::{Array, Map, MapData, PerCpuArray, SockMap},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        CgroupAttachMode, CgroupSockAddr, SkLookup, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use sluice_common::{counter_index, socket_index, FastPathEvent, Reason, MAX_SHARDS};
use tokio::io::unix::AsyncFd;

use super::{aya_maps::AyaMaps, KernelError};

/// How `xdp_ingress` ended up attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// In the driver (native XDP).
    Native,
    /// In the generic (skb) path, for drivers without native XDP such as `lo`.
    Generic,
    /// Taken over from a previous agent's pinned link (its mode is kept).
    Adopted,
}

impl XdpAttachMode {
    pub fn label(self) -> &'static str {
        match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
            XdpAttachMode::Adopted => "adopted",
        }
    }
}

/// What to load and where.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    /// Interfaces (in the agent's network namespace) to attach `xdp_ingress` to.
    pub interfaces: Vec<String>,
    /// Log level of the programs' aya-log output (1 error … 5 trace).
    pub log_level: u8,
    /// bpf filesystem for pinned maps and links (hand-over between agent
    /// processes). `None`: nothing pinned, everything goes with the process.
    pub bpffs: Option<PathBuf>,
    /// Which XDP attach modes to try.
    pub xdp_mode: XdpModePref,
    /// cgroup v2 directory for the connect4/connect6 hooks; `None`: the root
    /// of the cgroup v2 hierarchy.
    pub cgroup: Option<PathBuf>,
    /// Capacities of the maps in [`super::SIZABLE_MAPS`] (others keep the
    /// object's defaults).
    pub map_sizes: BTreeMap<String, u32>,
    /// Whether to attach the sockmap fast path (`sockops_track` on the
    /// cgroup, `msg_redirect` on `SOCK_PAIRS`).
    pub sockmap: SockmapPref,
    /// Leave the pinned datapath in place when this agent stops without a
    /// successor (`systemctl restart`): new connections to gateway ports
    /// wait (their SYNs are dropped and retransmitted) until the next agent
    /// inserts its sockets, instead of being refused. `sluice detach`
    /// removes it for good.
    pub keep_on_exit: bool,
}

/// Whether the sockmap fast path is wanted, and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SockmapPref {
    /// Not attached (the default: opt-in).
    #[default]
    Off,
    /// Attached, or loading fails with the reason.
    Required,
    /// Attached if the kernel allows it; otherwise left off with a warning.
    IfAvailable,
}

/// XDP attach preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpModePref {
    /// Native where the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// Native only: fail if the driver cannot.
    Native,
    /// Generic (skb) only.
    Generic,
}

/// The loaded and attached programs plus their maps.
pub struct KernelDatapath {
    // Field order matters for Drop: maps and programs go before the logger task
    // is aborted; the Ebpf handle owns the program links.
    /// The maps the reconciler programs.
    pub maps: AyaMaps,
    /// The penalty box (written by the rate-limit service, not reconciled).
    pub(super) penalty: aya::maps::LpmTrie<MapData, sluice_common::SourceRuleKey, u64>,
    sockets: SockMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    fast_path_counters: PerCpuArray<MapData, u64>,
    /// Whether the sockmap fast path is attached.
    sockmap: bool,
    xdp: BTreeMap<String, XdpAttachMode>,
    /// Capacity (`max_entries`) of each sizable map, as the kernel created it.
    map_limits: BTreeMap<&'static str, u32>,
    /// cgroup the connect hooks are attached to, if any.
    cgroup: Option<PathBuf>,
    owner: Array<MapData, u32>,
    /// Pin directory and the pinned XDP links (path, fd) when pinning.
    pins: Option<(PathBuf, Vec<(PathBuf, FdLink)>)>,
    /// See [`KernelOptions::keep_on_exit`].
    keep_on_exit: bool,
    ebpf: Ebpf,
    logger: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for KernelDatapath {
    fn drop(&mut self) {
        if let Some(l) = self.logger.take() {
            l.abort();
        }
        if let Some((dir, links)) = self.pins.take() {
            if self.owned_by_us() && self.keep_on_exit {
                tracing::info!(
                    dir = %dir.display(),
                    "eBPF datapath left pinned for the next agent (--keep-datapath-on-exit); \
                     `sluice detach` removes it"
                );
            } else if self.owned_by_us() {
                // The last agent: unpin so links detach and maps are freed
                // once our fds close (right after this).
                super::pins::remove_all(&dir);
                drop(links);
                tracing::info!(dir = %dir.display(), "eBPF pins removed; programs detached");
            } else {
                tracing::info!(
                    "another agent owns the eBPF datapath now; leaving programs, links and maps in place"
                );
            }
        }
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(map).map_err(|source| KernelError::Map {
        map: name,
        action: "open".into(),
        source,
    })
}

impl KernelDatapath {
    /// Loads and attaches everything, in the calling thread's network namespace.
    /// Must be called inside a tokio runtime (the log reader is a task).
    pub fn load(opts: &KernelOptions) -> Result<Self, KernelError> {
        raise_memlock();
        let pin_dir = opts
            .bpffs
            .as_deref()
            .map(super::pins::pin_dir)
            .transpose()?;
        let mut loader = EbpfLoader::new();
        loader.override_global("AYA_LOG_LEVEL", &opts.log_level, false);
        // The connect hooks see every network namespace under their cgroup;
        // they act only on sockets of ours.
        let cookie = netns_cookie()?;
        loader.override_global("NETNS_COOKIE", &cookie, true);
        for (name, size) in &opts.map_sizes {
            loader.map_max_entries(name, *size);
        }
        if let Some(dir) = &pin_dir {
            // Existing pins are reused: a restarted agent sees the maps (and
            // the shard sockets in them) the previous one left in place.
            for name in super::pins::PINNED_MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(crate::EBPF_OBJ).map_err(|e| {
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            if uid != 0 && is_permission_error(&e) {
                KernelError::NotPrivileged(uid)
            } else {
                KernelError::Load(e)
            }
        })?;
        let map_limits = super::SIZABLE_MAPS
            .iter()
            .filter_map(|&name| Some((name, max_entries(ebpf.map(name)?)?)))
            .collect();
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(tokio::spawn(pump_logs(logger))),
            Err(e) => {
                tracing::warn!(error = %e, "eBPF log output unavailable");
                None
            }
        };

        let mut xdp = BTreeMap::new();
        let mut links = Vec::new();
        if !opts.interfaces.is_empty() {
            let program: &mut Xdp = ebpf
                .program_mut("xdp_ingress")
                .ok_or(KernelError::MissingMap("xdp_ingress"))?
                .try_into()
                .map_err(|e| xdp_err("open", e))?;
            program.load().map_err(|e| xdp_err("load", e))?;
            for iface in &opts.interfaces {
                let (mode, link) = attach_xdp(program, iface, pin_dir.as_deref(), opts.xdp_mode)?;
                tracing::info!(interface = %iface, mode = mode.label(), "xdp_ingress attached");
                xdp.insert(iface.clone(), mode);
                links.extend(link);
            }
        }

        let sk = |action: &str, source| KernelError::Program {
            program: "sk_lookup_dispatch",
            action: action.to_owned(),
            source,
        };
        let program: &mut SkLookup = ebpf
            .program_mut("sk_lookup_dispatch")
            .ok_or(KernelError::MissingMap("sk_lookup_dispatch"))?
            .try_into()
            .map_err(|e| sk("open", e))?;
        program.load().map_err(|e| sk("load", e))?;
        // thread-self: the network namespace is a per-thread property.
        let netns =
            std::fs::File::open("/proc/thread-self/ns/net").map_err(|source| KernelError::Io {
                what: "opening /proc/thread-self/ns/net".into(),
                source,
            })?;
        let link = program
            .attach(&netns)
            .map_err(|e| sk("attach to network namespace", e))?;
        if let Some(dir) = &pin_dir {
            // Pinned, so that steering outlives this process when the
            // datapath is kept for the next agent; the previous agent's pin
            // is replaced (its program detaches once its process is gone).
            let path = super::pins::sk_lookup_link_path(dir);
            let fd = FdLink::from(program.take_link(link).map_err(|e| sk("take link", e))?);
            let _ = std::fs::remove_file(&path);
            let fd: FdLink = fd
                .pin(&path)
                .map_err(|e| link_err(format!("pin sk_lookup link at {}", path.display()), e))?
                .into();
            links.push((path, fd));
        }
        tracing::info!("sk_lookup_dispatch attached to the network namespace");

        let cgroup_dir = match &opts.cgroup {
            Some(d) => Some(d.clone()),
            None => crate::config::identity::cgroup2_root(),
        };
        let cgroup = attach_connect_hooks(&mut ebpf, cgroup_dir.as_deref())?;
        let sockmap = match opts.sockmap {
            SockmapPref::Off => false,
            pref => match super::fast_path::attach(&mut ebpf, cgroup_dir.as_deref()) {
                Ok(()) => true,
                Err(e) if pref == SockmapPref::Required => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "sockmap fast path unavailable; leaving it off (local hops take the TCP stack)"
                    );
                    false
                }
            },
        };

        let mut owner: Array<MapData, u32> = take(&mut ebpf, "OWNER")?;
        owner
            .set(0, std::process::id(), 0)
            .map_err(map_err("OWNER", "claim"))?;
        Ok(Self {
            cgroup,
            owner,
            pins: pin_dir.map(|d| (d, links)),
            keep_on_exit: opts.keep_on_exit,
            maps: AyaMaps {
                listeners: take(&mut ebpf, "LISTENERS")?,
                port_ranges: take(&mut ebpf, "PORT_RANGES")?,
                source_rules: take(&mut ebpf, "SOURCE_RULES")?,
                source_ns: take(&mut ebpf, "SOURCE_NS")?,
                cgroup_ns: take(&mut ebpf, "CGROUP_NS")?,
                admission: take(&mut ebpf, "ADMISSION")?,
            },
            sockets: take(&mut ebpf, "SHARD_SOCKETS")?,
            penalty: take(&mut ebpf, "PENALTY")?,
            counters: take(&mut ebpf, "COUNTERS")?,
            fast_path_counters: take(&mut ebpf, "FASTPATH_COUNTERS")?,
            sockmap,
            xdp,
            map_limits,
            ebpf,
            logger,
        })
    }

    /// Marks every listener and port range parked ([`sluice_common::LISTENER_F_PARKED`]):
    /// `xdp_ingress` drops new SYNs to them until the next agent's reconcile
    /// writes them again. Used when stopping with the datapath kept.
    pub fn park_listeners(&mut self) -> Result<(), KernelError> {
        use super::maps::DatapathMaps as _;
        for (k, mut v) in self.maps.dump_listeners()? {
            v.flags |= sluice_common::LISTENER_F_PARKED;
            self.maps.put_listener(k, v)?;
        }
        for (b, mut v) in self.maps.dump_port_ranges()? {
            v.flags |= sluice_common::LISTENER_F_PARKED;
            self.maps.put_port_range(b, v)?;
        }
        Ok(())
    }

    /// Whether the pinned datapath stays when this agent stops (and owns it).
    pub fn keep_on_exit(&self) -> bool {
        self.keep_on_exit && self.pins.is_some()
    }

    /// Whether this process still owns the pinned datapath (no successor took over).
    pub fn owned_by_us(&self) -> bool {
        self.owner.get(&0, 0).ok() == Some(std::process::id())
    }

    /// The cgroup with the connect4/connect6 hooks, if attached.
    pub fn connect_hooks_cgroup(&self) -> Option<&std::path::Path> {
        self.cgroup.as_deref()
    }

    /// Capacity of each sizable map (`--map-size`), as the kernel reports it.
    pub fn map_limits(&self) -> &BTreeMap<&'static str, u32> {
        &self.map_limits
    }

    /// Whether the sockmap fast path is attached.
    pub fn sockmap_enabled(&self) -> bool {
        self.sockmap
    }

    /// Sockmap fast path event counters summed over CPUs.
    pub fn fast_path_counters(&self) -> Vec<(FastPathEvent, u64)> {
        FastPathEvent::ALL
            .into_iter()
            .filter_map(|event| {
                let values = self.fast_path_counters.get(&(event as u32), 0).ok()?;
                Some((event, values.iter().sum()))
            })
            .collect()
    }

    /// Interfaces with `xdp_ingress` and how it is attached.
    pub fn xdp_interfaces(&self) -> &BTreeMap<String, XdpAttachMode> {
        &self.xdp
    }

    /// Puts a shard's listening socket where `sk_lookup_dispatch` finds it.
    pub fn set_shard_socket(
        &mut self,
        shard: u32,
        ipv6: bool,
        socket: &impl AsRawFd,
    ) -> Result<(), KernelError> {
        self.sockets
            .set(socket_index(shard, ipv6), socket, 0)
            .map_err(|source| KernelError::Map {
                map: "SHARD_SOCKETS",
                action: format!("insert socket of shard {shard}"),
                source,
            })
    }

    /// Removes a shard's socket; removing an absent one is not an error.
    pub fn clear_shard_socket(&mut self, shard: u32, ipv6: bool) -> Result<(), KernelError> {
        match self.sockets.clear_index(&socket_index(shard, ipv6)) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(source) => Err(KernelError::Map {
                map: "SHARD_SOCKETS",
                action: format!("remove socket of shard {shard}"),
                source,
            }),
        }
    }

    /// Runs `xdp_ingress` once on `frame` with `BPF_PROG_TEST_RUN`, against
    /// the maps as they are programmed, and returns its verdict
    /// (`XDP_PASS`, `XDP_DROP`, …). No interface is involved: this is how the
    /// program is fuzzed (`tests/tests/xdp_fuzz.rs`). The kernel wants at
    /// least an Ethernet header's worth of bytes.
    pub fn run_xdp(&mut self, frame: &[u8]) -> Result<u32, KernelError> {
        use aya::programs::{TestRun, TestRunOptions};
        let err = |action: &str, source| KernelError::Program {
            program: "xdp_ingress",
            action: action.into(),
            source,
        };
        let program: &mut Xdp = self
            .ebpf
            .program_mut("xdp_ingress")
            .ok_or(KernelError::MissingMap("xdp_ingress"))?
            .try_into()
            .map_err(|e| err("open", e))?;
        // Loaded at start only when attached to an interface.
        if program.fd().is_err() {
            program.load().map_err(|e| err("load", e))?;
        }
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        program
            .test_run(opts)
            .map(|r| r.return_value)
            .map_err(|e| err("test run (BPF_PROG_TEST_RUN)", e))
    }

    /// Packet counters summed over CPUs, for shard 0 (no shard) and `shards`.
    pub fn counters(&self, shards: &[u32]) -> Vec<(u32, Reason, u64)> {
        let mut out = Vec::new();
        for &shard in std::iter::once(&0).chain(shards) {
            if shard >= MAX_SHARDS {
                continue;
            }
            for reason in Reason::ALL {
                if let Ok(values) = self.counters.get(&counter_index(shard, reason), 0) {
                    out.push((shard, reason, values.iter().sum()));
                }
            }
        }
        out
    }
}

/// The kernel's `max_entries` of a loaded map (of the kinds this object
/// defines); `None` when the kernel does not say.
fn max_entries(map: &Map) -> Option<u32> {
    let data = match map {
        Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d)
        | Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::SockHash(d)
        | Map::SockMap(d) => d,
        _ => return None,
    };
    data.info().ok().map(|i| i.max_entries())
}

fn xdp_err(action: &str, source: aya::programs::ProgramError) -> KernelError {
    KernelError::Program {
        program: "xdp_ingress",
        action: action.to_owned(),
        source,
    }
}

fn link_err(action: String, e: impl std::fmt::Display) -> KernelError {
    KernelError::Io {
        what: format!("xdp_ingress link: {action}"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Attaches `xdp_ingress` to `iface`: native mode, else generic. With a pin
/// directory, an XDP link pinned by a previous agent is taken over by swapping
/// its program atomically (no moment without a program), and a new link is
/// pinned so that a successor can do the same.
fn attach_xdp(
    program: &mut Xdp,
    iface: &str,
    pin_dir: Option<&std::path::Path>,
    pref: XdpModePref,
) -> Result<(XdpAttachMode, Option<(PathBuf, FdLink)>), KernelError> {
    let c =
        std::ffi::CString::new(iface).map_err(|_| KernelError::NoSuchInterface(iface.into()))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        return Err(KernelError::NoSuchInterface(iface.into()));
    }
    let pinned = pin_dir.map(|d| super::pins::xdp_link_path(d, ifindex));
    if let Some(path) = pinned.as_ref().filter(|p| p.exists()) {
        let fd: FdLink = PinnedLink::from_pin(path)
            .map_err(|e| link_err(format!("open pin {}", path.display()), e))?
            .into();
        let link =
            XdpLink::try_from(fd).map_err(|e| link_err("pinned link is not XDP".into(), e))?;
        let id = program.attach_to_link(link).map_err(|e| {
            xdp_err(
                &format!("replace the program of the pinned link on {iface}"),
                e,
            )
        })?;
        let fd = FdLink::try_from(program.take_link(id).map_err(|e| xdp_err("take link", e))?)
            .map_err(|e| link_err("as fd link".into(), e))?;
        return Ok((XdpAttachMode::Adopted, Some((path.clone(), fd))));
    }
    let native = match pref {
        XdpModePref::Generic => None,
        _ => Some(program.attach_to_if_index(ifindex, XdpMode::Driver)),
    };
    let (mode, id) = match native {
        Some(Ok(id)) => (XdpAttachMode::Native, id),
        Some(Err(e)) if pref == XdpModePref::Native => {
            return Err(xdp_err(&format!("attach to {iface} in native mode"), e))
        }
        None => {
            let id = program
                .attach_to_if_index(ifindex, XdpMode::Skb)
                .map_err(|e| xdp_err(&format!("attach to {iface} in generic mode"), e))?;
            (XdpAttachMode::Generic, id)
        }
        Some(Err(native_err)) => {
            let id = program
                .attach_to_if_index(ifindex, XdpMode::Skb)
                .map_err(|e| {
                    xdp_err(
                        &format!("attach to {iface} (native failed: {native_err}; generic)"),
                        e,
                    )
                })?;
            (XdpAttachMode::Generic, id)
        }
    };
    let Some(path) = pinned else {
        return Ok((mode, None));
    };
    let fd = FdLink::try_from(program.take_link(id).map_err(|e| xdp_err("take link", e))?)
        .map_err(|e| {
            link_err(
                format!("{iface}: kernel without bpf_link XDP cannot pin"),
                e,
            )
        })?;
    let fd: FdLink = fd
        .pin(&path)
        .map_err(|e| link_err(format!("pin at {}", path.display()), e))?
        .into();
    Ok((mode, Some((path, fd))))
}

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE, 5.14+).
fn netns_cookie() -> Result<u64, KernelError> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|source| KernelError::Io {
        what: "socket for SO_NETNS_COOKIE".into(),
        source,
    })?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(KernelError::Io {
            what: "SO_NETNS_COOKIE (kernel 5.14+ needed for the connect hooks)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(cookie)
}

/// Attaches connect4/connect6 to `cgroup` (the caller's default: the cgroup v2 root). A
/// host without cgroup v2 loses only the local-process admission check: said
/// loudly, not fatal.
fn attach_connect_hooks(
    ebpf: &mut Ebpf,
    cgroup: Option<&std::path::Path>,
) -> Result<Option<PathBuf>, KernelError> {
    let Some(dir) = cgroup.map(std::path::Path::to_path_buf) else {
        tracing::warn!(
            "no cgroup v2 hierarchy mounted: connect4/connect6 not attached;                  local processes are not checked against namespace admission"
        );
        return Ok(None);
    };
    let file = std::fs::File::open(&dir).map_err(|source| KernelError::Io {
        what: format!("opening cgroup {}", dir.display()),
        source,
    })?;
    for name in ["connect4", "connect6"] {
        let err = |action: &str, source| KernelError::Program {
            program: if name == "connect4" {
                "connect4"
            } else {
                "connect6"
            },
            action: action.to_owned(),
            source,
        };
        let program: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(KernelError::MissingMap("connect4/connect6 program"))?
            .try_into()
            .map_err(|e| err("open", e))?;
        program.load().map_err(|e| err("load", e))?;
        program
            // Link-based attachments coexist with other programs on the cgroup
            // (and with a successor agent's); ALLOW_MULTI is for the legacy API.
            .attach(&file, CgroupAttachMode::Single)
            .map_err(|e| err(&format!("attach to cgroup {}", dir.display()), e))?;
    }
    tracing::info!(cgroup = %dir.display(), "connect4/connect6 attached");
    Ok(Some(dir))
}

pub(super) fn is_enoent(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

fn is_permission_error(e: &aya::EbpfError) -> bool {
    let s = e.to_string();
    s.contains("Operation not permitted") || s.contains("Permission denied")
}

pub(super) fn map_err(
    map: &'static str,
    action: &str,
) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    let action = action.to_owned();
    move |source| {
        // Hash maps answer E2BIG when full, LPM tries ENOSPC.
        let full = matches!(&source, aya::maps::MapError::SyscallError(s)
            if matches!(s.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC)));
        if full {
            KernelError::MapFull { map }
        } else {
            KernelError::Map {
                map,
                action,
                source,
            }
        }
    }
}

/// Forwards aya-log records from the programs' ring buffer to the `log` facade
/// (bridged into tracing) whenever the buffer becomes readable.
async fn pump_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer fd for its whole life and the
    // AsyncFd owns the logger, so the fd stays open and the same while registered.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot poll the eBPF log buffer");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

fn raise_memlock() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure is harmless here.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
}
