//! Quire's deterministic failure simulator: runs a whole cluster of real Quire control-plane
//! nodes (the production `ControlPlane`, openraft, tonic transport and `Router`) in one
//! process under a seed — turmoil for the network and time, `SimDisk` for the disks, the
//! transport's `LinkFaults` for message faults — with a seeded workload, a fault schedule,
//! invariant checkers and an application-level trace whose hash identifies the run. Each node
//! also runs the production data plane; simulated agents call tools through it against the
//! Notion sandbox (the `quire-sandbox` crate beside it) on its own host ([`notion`]).
//!
//! It owns the simulation and its checkers; it must not change how the nodes behave except
//! through the hooks production code offers (engine, network dialer, fault filter, seeded
//! runtime RNG) and the planted bugs of [`bugs`], which only the simulator turns on. Run one
//! simulation per process ([`run::run`]); sweeps start a child process per seed.

pub mod access;
pub mod bugs;
pub mod check;
pub mod digest;
pub mod faults;
pub mod forward;
pub mod node;
pub mod notion;
pub mod placement;
pub mod run;
pub mod trace;
pub mod workload;

pub use bugs::Bug;
pub use check::Violation;
pub use run::{RunError, RunOptions, RunReport, run};
pub use trace::Trace;
