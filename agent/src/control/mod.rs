//! Control plane: turns validated config into a snapshot for the data path and
//! desired state for the eBPF maps.
mod attach;
mod backend_tls;
mod backends;
mod compile;
mod delegation;
mod frontend_tls;
mod isolation;
mod kind_conflict;
mod listener_sets;
pub mod policy;
pub mod refgrant;
mod route_status;
mod routes;
pub mod status;
pub mod tls;

pub use compile::{
    compile, compile_with, CompileStats, Compiled, Compiler, ShardIds, CONTROLLER_NAME,
};
pub use policy::PolicyEnv;
