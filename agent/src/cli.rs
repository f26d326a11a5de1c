//! Command line of the `sluice` binary.
use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};

use crate::app::{DatapathMode, Settings};

/// Sluice: eBPF-accelerated node-level API gateway agent (Gateway API).
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    /// Directory of Gateway API YAML documents (GatewayClass, Gateway, HTTPRoute,
    /// Service, EndpointSlice, Namespace); read recursively, *.yaml and *.yml.
    #[arg(long, value_name = "DIR")]
    pub config_dir: PathBuf,

    /// Datapath: `ebpf` (XDP + sk_lookup; fail if they cannot load), `userspace`
    /// (the agent binds listener addresses itself), or `auto` (eBPF when it
    /// loads, userspace otherwise; the choice is logged and exported as the
    /// `sluice_datapath_mode` metric).
    #[arg(long, value_enum, default_value_t = DatapathArg::Auto)]
    pub datapath: DatapathArg,

    /// Listen address of the admin endpoint (/healthz, /readyz, /metrics, /config).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    pub admin_addr: SocketAddr,

    /// Interface to attach `xdp_ingress` to (repeatable). Without any, no XDP
    /// program is attached and only sk_lookup steering is used.
    #[arg(long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,

    /// Log level of the eBPF programs' output: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub ebpf_log_level: EbpfLogLevel,

    /// bpf filesystem where the eBPF maps, the shard-socket SockMap and the XDP
    /// links are pinned (under `sluice/<netns inode>/`), so that a restarted
    /// agent takes over without refusing connections. Mounted if needed.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,

    /// XDP attach mode: `auto` (native where the driver supports it, generic
    /// otherwise), `native` (fail without driver support), `generic`.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,

    /// Agent config file (YAML). Today: `namespaces:` — which source CIDRs and
    /// cgroups belong to which namespace, for `sluice.dev/admitted-namespaces`.
    #[arg(long, value_name = "FILE", env = "SLUICE_CONFIG")]
    pub agent_config: Option<PathBuf>,

    /// cgroup v2 directory for the connect4/connect6 hooks (default: the root
    /// of the cgroup v2 hierarchy, wherever it is mounted).
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// Networks of proxies in front of the gateway (comma-separated CIDRs or
    /// addresses). Their X-Forwarded-For is appended to and their
    /// X-Forwarded-Proto/Host kept; from any other peer these headers (and
    /// Forwarded) are replaced. Default: trust no one.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A CIDR, or a single address (as /32 or /128).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("not a CIDR or IP address: {s:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatapathArg {
    Auto,
    Ebpf,
    Userspace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EbpfLogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// Settings for [`crate::app::build`]; reads the agent config file.
    pub fn settings(&self) -> Result<Settings, crate::config::ConfigError> {
        let mut s = Settings::new(&self.config_dir);
        if let Some(path) = &self.agent_config {
            s.identity = crate::config::identity::load_agent_config(path)?;
        }
        s.cgroup = self.cgroup.clone();
        s.datapath = match self.datapath {
            DatapathArg::Auto => DatapathMode::Auto,
            DatapathArg::Ebpf => DatapathMode::Ebpf,
            DatapathArg::Userspace => DatapathMode::Userspace,
        };
        s.admin_addr = self.admin_addr;
        s.interfaces = self.interfaces.clone();
        s.bpffs = Some(self.bpffs.clone());
        s.xdp_mode = match self.xdp_mode {
            XdpModeArg::Auto => crate::kernel::XdpModePref::Auto,
            XdpModeArg::Native => crate::kernel::XdpModePref::Native,
            XdpModeArg::Generic => crate::kernel::XdpModePref::Generic,
        };
        s.trusted_proxies = self.trusted_proxies.clone();
        s.ebpf_log_level = match self.ebpf_log_level {
            EbpfLogLevel::Error => 1,
            EbpfLogLevel::Warn => 2,
            EbpfLogLevel::Info => 3,
            EbpfLogLevel::Debug => 4,
            EbpfLogLevel::Trace => 5,
        };
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent_and_parses_the_documented_form() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "sluice",
            "--config-dir",
            "d",
            "--datapath",
            "ebpf",
            "--admin-addr",
            "127.0.0.1:1",
            "--interface",
            "lo",
            "--interface",
            "eth0",
            "--trusted-proxies",
            "10.0.0.0/8, 192.168.1.1",
        ]);
        let s = cli.settings().unwrap();
        assert_eq!(
            s.trusted_proxies,
            [
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "192.168.1.1/32".parse().unwrap()
            ]
        );
        assert!(
            Cli::try_parse_from(["sluice", "--config-dir", "d", "--trusted-proxies", "x"]).is_err()
        );
        assert_eq!(s.datapath, DatapathMode::Ebpf);
        assert_eq!(s.interfaces, ["lo", "eth0"]);
    }
}
