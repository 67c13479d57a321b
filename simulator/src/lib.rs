//! Quire's deterministic failure simulator: runs whole clusters of real Quire nodes in one
//! process under a seed. The Notion sandbox it drives lives in the `quire-sandbox` crate
//! beside it.
