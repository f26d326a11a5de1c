//! Builds the eBPF object (`ebpf/sluice-ebpf`) for `bpfel-unknown-none` with the
//! nightly toolchain and bpf-linker, and leaves it in OUT_DIR for
//! `include_bytes_aligned!`. `cargo xtask setup` installs what this needs.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/sluice-ebpf");
    println!("cargo:rerun-if-changed=../ebpf/sluice-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sluice-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (run `cargo xtask setup` if bpf-linker or nightly rust-src is missing)")
}
