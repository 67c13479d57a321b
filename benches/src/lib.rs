//! Quire's benchmarks. This crate owns the load generator (`load`: closed loop with N
//! writers, or open loop at a fixed arrival rate; warm-up, measured window, HDR latency
//! histograms), the description of the machine a run
//! used (`machine`), report formatting (`report`: terminal table, Markdown, JSON; every scenario's figures
//! through `report::Figures`), and the
//! scenarios that drive a cluster of real `quire` processes started by
//! `quire_node::local_cluster` (`raft_commit`, `audit_commit`, `failover`, `budget_share`,
//! `memory`, `forwarding`, `drain_time`, with their shared admin writes and options (`RunOpts`) in `admin_writes`, the
//! placement and metrics readings in `placement_view` and the report's short runs in
//! `report_scenarios`), the side-by-side with Notion's own MCP server
//! (`side_by_side`), a small MCP client (`mcp_client`) and the report's SVG chart (`chart`). It must not know Quire's internals: it talks
//! to nodes only through their public HTTP APIs (admin API, later MCP), as an operator or an
//! agent would, so that what it measures is what they see.

pub mod admin_writes;
pub mod audit_commit;
pub mod budget_share;
pub mod chart;
pub mod cpu;
pub mod drain_time;
pub mod etcd;
pub mod failover;
pub mod forwarding;
pub mod load;
pub mod machine;
pub mod mcp_client;
pub mod memory;
pub mod placement_view;
pub mod raft_commit;
pub mod report;
pub mod report_cmd;
pub mod report_scenarios;
pub mod side_by_side;
