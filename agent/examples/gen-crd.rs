//! Prints the SluicePolicy CRD generated from the Rust types (used by
//! `cargo xtask gen-crd`, which writes it to deploy/daemonset/crds/).
fn main() {
    match sluice::config::policy::crd::crd_yaml() {
        Ok(yaml) => print!("{yaml}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
