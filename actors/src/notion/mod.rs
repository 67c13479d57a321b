//! The Notion API as the data plane sees it: requests, errors, the HTTP client and the
//! transport seam under it.

pub mod client;
pub mod http;
pub mod pagination;
mod request;

pub use client::{NotionClient, NotionClientConfig};
pub use http::{HttpTransport, ReqwestTransport};
pub use request::{HttpMethod, NotionError, NotionRequest, NotionToken};
