//! The Notion API as the data plane sees it: requests, errors, and the HTTP client.

mod request;

pub use request::{HttpMethod, NotionError, NotionRequest, NotionToken};
