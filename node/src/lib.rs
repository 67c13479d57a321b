//! The `quire` binary's library: configuration, CLI, wiring, and the HTTP front (MCP
//! endpoint, health). The only crate that wires sled, tonic, ractor and rmcp together.
