//! A client of one node's admin API (`/admin/v1`) that panics on transport errors, for tests
//! whose node is expected to answer.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

/// The admin API at `base` (the node's base URL).
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    /// `method path` with `token` and an optional JSON body; the status and the JSON answer
    /// (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/admin/v1{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin API request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("admin API body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Like `call`, asserting a 2xx status; the answer.
    pub async fn ok(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(token, method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {v}"
        );
        v
    }

    /// Asserts a 403 `forbidden` whose message names `permission` and `scope`.
    pub async fn forbidden(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        permission: &str,
        scope: &str,
    ) {
        let (status, v) = self.call(token, method.clone(), path, body).await;
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert_eq!(v["error"], "forbidden", "{v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(permission) && message.contains(scope),
            "{method} {path}: the refusal should name {permission} and {scope}: {message}"
        );
    }

    /// Polls a query of the audit trail (as `root`) until a record matches `pred`, for at
    /// most 15 s; the record.
    pub async fn wait_for_record(
        &self,
        root: &str,
        query: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let page = self
                .ok(
                    root,
                    Method::GET,
                    &format!("/audit/records?{query}&limit=1000"),
                    None,
                )
                .await;
            if let Some(r) = page["records"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| pred(r))
            {
                return r.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no audit record for {query} matched within 15 s: {page}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
