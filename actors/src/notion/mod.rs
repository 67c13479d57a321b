//! The Notion API as the data plane sees it: requests, errors, and the HTTP client.

pub mod client;
pub mod pagination;
mod request;

pub use client::{NotionClient, NotionClientConfig};
pub use request::{HttpMethod, NotionError, NotionRequest, NotionToken};
