//! Quire's wire layer between peer nodes: tonic gRPC services and clients over rustls
//! mutual TLS for Raft RPCs, forwarded calls, rate-limit leases, shard handoff and session
//! resume, with a fault-filter hook for tests and the simulator.
//!
//! A single node needs none of it: today the crate holds only the boundary the node wires.
//! It must not know business rules (authorization, tools, Notion).
