//! A faithful local stand-in for Notion's public API v1: in memory, seeded, with Notion's
//! validation limits, error objects, pagination, per-integration sharing and rate limits.
//! Tests, benchmarks, the simulator and `quire serve --sandbox` use it; Notion itself is
//! never reached from those.
