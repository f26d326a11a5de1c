//! Sluice: an eBPF-accelerated, node-level API gateway agent.
//!
//! Layout: [`config`] (sources, validation) → [`control`] (compile) →
//! [`snapshot`] (immutable, read by the data path) and [`kernel`] (eBPF maps);
//! [`gateway`] is the L7 data path, which runs each request through the
//! phases of [`policy`] (compiled API policy, independent of the config
//! types); [`reload`] applies a configuration (at start-up and on every
//! change of the config directory); [`app`] wires it together.
pub mod access_log;
pub mod admin;
pub mod alloc;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod cpus;
pub mod drift;
pub mod gateway;
pub mod kernel;
pub mod kube;
pub mod matchers;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod random;
pub mod reload;
pub mod snapshot;
pub mod sources;
pub mod telemetry;

/// The eBPF object built from `ebpf/sluice-ebpf` by `build.rs`.
pub static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-ebpf"));
