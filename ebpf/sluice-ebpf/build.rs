use which::which;

/// Re-run when bpf-linker changes: cargo does not track the linker as an input,
/// and a new linker can change the object without any source change.
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
