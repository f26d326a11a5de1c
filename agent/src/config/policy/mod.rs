//! `SluicePolicy` (`sluice.dev/v1alpha1`): the wire shape the CRD is
//! generated from ([`wire`]), its validated form ([`model`]) and the
//! conversion between them ([`convert`]).
pub mod convert;
pub mod crd;
pub mod model;
pub mod wire;

pub use convert::{lenient_targets, references, POLICY_VERSIONS, SLUICE_GROUP};
pub use model::*;
