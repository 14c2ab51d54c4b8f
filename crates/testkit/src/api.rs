//! A client for herald's plain HTTP API: publish, topics, health, metrics.
//!
//! Every call returns a [`Reply`] (status, headers, body) instead of failing
//! on non-2xx, because many tests are about the error answers.

use std::time::Duration;

use reqwest::{header::HeaderMap, Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::{Exposition, TIMEOUT};

/// An HTTP client bound to one node's base URL.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    client: Client,
}

/// One answer: status, headers, the body as text and, when it is JSON, as
/// a value.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body parsed as JSON, or `Value::Null` when it is not JSON.
    pub body: Value,
}

impl Reply {
    /// The answer `response` carries. A `200` event stream is not read (it
    /// may never end): its head is the answer. Anything else is read whole.
    ///
    /// # Errors
    ///
    /// When the body cannot be read.
    pub async fn read(response: reqwest::Response) -> reqwest::Result<Reply> {
        let status = response.status();
        let headers = response.headers().clone();
        let is_stream = status == StatusCode::OK
            && headers
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let text = if is_stream {
            String::new()
        } else {
            response.text().await?
        };
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            text,
            body,
        })
    }

    /// Sends `method url` on `client` with extra `headers` and an optional
    /// JSON `body`, and returns the answer as [`Reply::read`] does.
    ///
    /// # Panics
    ///
    /// When the request fails or times out ([`TIMEOUT`](crate::TIMEOUT)).
    pub async fn send(
        client: &reqwest::Client,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut request = client.request(method.clone(), url).timeout(crate::TIMEOUT);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
        Reply::read(response)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading the answer: {e:?}"))
    }

    /// A header's value, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts that this is an `application/problem+json` answer with
    /// `status` and the fields `type`, `title`, `status` and `detail`, and
    /// returns the `detail`.
    ///
    /// # Panics
    ///
    /// When it is not.
    pub fn assert_problem(&self, status: u16) -> &str {
        assert_eq!(self.status.as_u16(), status, "status of {self:?}");
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/problem+json"),
            "content type {content_type:?} of {self:?}"
        );
        let body = &self.body;
        assert!(body["type"].is_string(), "problem type in {body}");
        assert!(body["title"].is_string(), "problem title in {body}");
        assert_eq!(body["status"], json!(status), "problem status in {body}");
        body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("problem detail in {body}"))
    }
}

impl Api {
    /// A client for the node at `base` (such as `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        let client = Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("a plain HTTP client builds");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// A client for the node at `base` that opens a new connection for
    /// every request, never reusing one.
    pub fn without_keep_alive(base: &str) -> Self {
        let client = Client::builder()
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .expect("a plain HTTP client builds");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// The underlying HTTP client, whose idle connections later requests
    /// (and [`crate::Subscribe::send_on`]) may reuse.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with no body. `path` starts with `/` and may hold a
    /// query string.
    ///
    /// # Panics
    ///
    /// When the node cannot be reached.
    pub async fn request(&self, method: Method, path: &str) -> Reply {
        self.send(self.client.request(method, self.url(path))).await
    }

    /// `GET path`.
    ///
    /// # Panics
    ///
    /// When the node cannot be reached.
    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path).await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Panics
    ///
    /// When the node cannot be reached.
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    /// `POST path` with raw bytes as `Content-Type: application/json`, for
    /// bodies that are not valid JSON on purpose.
    ///
    /// # Panics
    ///
    /// When the node cannot be reached.
    pub async fn post_bytes(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into());
        self.send(request).await
    }

    /// `POST /v1/publish`.
    ///
    /// # Panics
    ///
    /// When the node cannot be reached.
    pub async fn publish(&self, body: &Value) -> Reply {
        self.post_json("/v1/publish", body).await
    }

    /// `POST /v1/publish` that reports a failure to reach the node (or an
    /// answer not complete within `timeout`) instead of panicking, for
    /// clients that keep going through faults.
    ///
    /// # Errors
    ///
    /// What went wrong, in words.
    pub async fn try_publish(&self, body: &Value, timeout: Duration) -> Result<Reply, String> {
        let request = self
            .client
            .post(self.url("/v1/publish"))
            .json(body)
            .timeout(timeout);
        self.try_send(request).await
    }

    /// `POST /v1/publish/batch`.
    ///
    /// # Panics
    ///
    /// When the node cannot be reached.
    pub async fn publish_batch(&self, body: &Value) -> Reply {
        self.post_json("/v1/publish/batch", body).await
    }

    /// Publishes `data` to `topic` and returns the new cursor.
    ///
    /// # Panics
    ///
    /// Unless the answer is `202 {"id": …}`.
    pub async fn publish_ok(&self, topic: &str, data: Value) -> String {
        self.publish_body_ok(&json!({ "topic": topic, "data": data }))
            .await
    }

    /// Publishes a full publish object to one topic and returns the cursor.
    ///
    /// # Panics
    ///
    /// Unless the answer is `202 {"id": …}`.
    pub async fn publish_body_ok(&self, body: &Value) -> String {
        let reply = self.publish(body).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "publish {body}: {reply:?}"
        );
        reply.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("publish {body} answered without an id: {reply:?}"))
            .to_owned()
    }

    /// `GET /v1/topics/{topic}` with the topic percent-encoded.
    ///
    /// # Panics
    ///
    /// When the node cannot be reached.
    pub async fn topic_info(&self, topic: &str) -> Reply {
        self.get(&format!("/v1/topics/{}", encode_path_segment(topic)))
            .await
    }

    /// The history length `GET /v1/topics/{topic}` reports.
    ///
    /// # Panics
    ///
    /// Unless the answer is `200` with a numeric `history.length`.
    pub async fn history_length(&self, topic: &str) -> u64 {
        let reply = self.topic_info(topic).await;
        assert_eq!(reply.status, StatusCode::OK, "topic info: {reply:?}");
        reply.body["history"]["length"]
            .as_u64()
            .unwrap_or_else(|| panic!("no history.length in {}", reply.body))
    }

    /// `GET /metrics`, parsed.
    ///
    /// # Panics
    ///
    /// Unless the answer is `200` in valid Prometheus text format.
    pub async fn metrics(&self) -> Exposition {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, StatusCode::OK, "metrics: {reply:?}");
        Exposition::parse(&reply.text)
            .unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text: {e}"))
    }

    /// One sample of `/metrics`: the series `name` with exactly `labels`.
    ///
    /// # Panics
    ///
    /// As [`Api::metrics`].
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics().await.value(name, labels)
    }

    /// The status of `GET path`, or `None` when the node cannot be reached
    /// (for polling a node that is starting or stopping).
    pub async fn status_of(&self, path: &str) -> Option<u16> {
        let response = self.client.get(self.url(path)).send().await.ok()?;
        Some(response.status().as_u16())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        self.try_send(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_send(&self, request: reqwest::RequestBuilder) -> Result<Reply, String> {
        let response = request
            .send()
            .await
            .map_err(|e| format!("request to {} failed: {e}", self.base))?;
        Reply::read(response)
            .await
            .map_err(|e| format!("reading an answer from {} failed: {e}", self.base))
    }
}

/// Percent-encodes `text` for one path segment: everything but
/// `A–Z a–z 0–9 - . _ ~ : @` is escaped, `/` included (as `%2F`).
pub fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_escape_slashes_and_non_ascii() {
        assert_eq!(encode_path_segment("a/b:c@d~e"), "a%2Fb:c@d~e");
        assert_eq!(encode_path_segment("é x"), "%C3%A9%20x");
    }
}
