//! Wall-clock time for timestamps the node stamps on commands (token issue and expiry). The
//! clock is the control plane's own ([`quire_raft::clock`]): the system clock in production,
//! one the simulator drives under simulation.

use std::sync::Arc;

pub use quire_raft::clock::{Clock, ManualClock, SystemClock};

pub type SharedClock = Arc<dyn Clock>;
