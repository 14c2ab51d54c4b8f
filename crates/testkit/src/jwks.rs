//! An identity provider's key set the test owns ([`JwksServer`]): a real
//! HTTP server publishing a JWKS (RFC 7517) at `/jwks.json`, for herald's
//! `auth.jwks_url`.
//!
//! A test rotates keys by replacing the set ([`JwksServer::set_keys`]),
//! sees how often herald fetched it ([`JwksServer::fetches`]), and makes the
//! provider fail: answering `503` ([`JwksServer::set_available`]), or not
//! listening at all ([`JwksServer::stop`], [`JwksServer::reserve`]) and
//! later listening again on the same port ([`JwksServer::listen`]), since
//! herald keeps the URL it was started with. The port comes from
//! [`crate::restartable_port`], so no other process takes it meanwhile.
//! Keys come from [`crate::TokenSigner::jwk`].

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::{
    hook::{HttpServer, Request, Response},
    restartable_port,
};

/// The path the key set is served at.
const PATH: &str = "/jwks.json";

#[derive(Debug)]
struct JwksState {
    keys: Vec<Value>,
    available: bool,
    fetches: usize,
}

/// A JWKS endpoint on a loopback port that survives restarts; stops when
/// dropped.
#[derive(Debug)]
pub struct JwksServer {
    server: HttpServer,
    state: Arc<Mutex<JwksState>>,
}

impl JwksServer {
    /// Starts serving `{"keys": keys}`.
    ///
    /// # Panics
    ///
    /// When its port cannot be bound.
    pub fn start(keys: Vec<Value>) -> Self {
        let jwks = Self::reserve(keys);
        jwks.listen();
        jwks
    }

    /// A provider that is down: its port and URL are fixed, nothing listens
    /// (connections are refused) until [`JwksServer::listen`].
    pub fn reserve(keys: Vec<Value>) -> Self {
        let state = Arc::new(Mutex::new(JwksState {
            keys,
            available: true,
            fetches: 0,
        }));
        let handler_state = Arc::clone(&state);
        let server = HttpServer::new(restartable_port(), move |request: &Request| {
            answer(&handler_state, request)
        });
        Self { server, state }
    }

    /// The URL to configure as `auth.jwks_url`.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.server.addr())
    }

    /// Listens on its port, if it does not already.
    ///
    /// # Panics
    ///
    /// When another process has taken the port.
    pub fn listen(&self) {
        self.server.listen();
    }

    /// Stops listening and closes every connection: fetches are refused
    /// until [`JwksServer::listen`].
    pub async fn stop(&self) {
        self.server.stop().await;
    }

    /// Whether it accepts connections now.
    pub fn is_listening(&self) -> bool {
        self.server.is_listening()
    }

    /// Serves `keys` from now on (a key rotation at the provider).
    pub fn set_keys(&self, keys: Vec<Value>) {
        self.lock().keys = keys;
    }

    /// The keys it serves.
    pub fn keys(&self) -> Vec<Value> {
        self.lock().keys.clone()
    }

    /// Answers fetches with the key set (`true`) or with `503` (`false`).
    pub fn set_available(&self, available: bool) {
        self.lock().available = available;
    }

    /// How many `GET /jwks.json` it has received, whatever it answered.
    pub fn fetches(&self) -> usize {
        self.lock().fetches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JwksState> {
        self.state.lock().expect("never poisoned")
    }
}

fn answer(state: &Mutex<JwksState>, request: &Request) -> Response {
    // The query string is not part of the resource.
    let path = request.path.split('?').next().unwrap_or_default();
    if path != PATH {
        return Response::json(404, &json!({"error": "not found"}));
    }
    if request.method != "GET" {
        return Response::json(405, &json!({"error": "method not allowed"}));
    }
    let mut state = state.lock().expect("never poisoned");
    state.fetches += 1;
    if !state.available {
        return Response::json(503, &json!({"error": "the test's provider is down"}));
    }
    Response::json(200, &json!({ "keys": state.keys }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenSigner;

    async fn fetch(client: &reqwest::Client, url: &str) -> Result<(u16, Value), reqwest::Error> {
        let response = client.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    #[tokio::test]
    async fn serves_rotates_fails_and_comes_back_on_the_same_port() {
        let rsa = TokenSigner::rs256().jwk("rsa-1");
        let ec = TokenSigner::es256().jwk("ec-1");
        let jwks = JwksServer::start(vec![rsa.clone()]);
        let url = jwks.url();
        assert!(url.ends_with("/jwks.json"), "{url}");
        let client = reqwest::Client::new();
        assert_eq!(
            fetch(&client, &url).await.expect("served"),
            (200, json!({"keys": [rsa.clone()]}))
        );
        jwks.set_keys(vec![rsa.clone(), ec.clone()]);
        assert_eq!(
            fetch(&client, &url).await.expect("served"),
            (200, json!({"keys": [rsa, ec.clone()]}))
        );
        jwks.set_available(false);
        assert_eq!(fetch(&client, &url).await.expect("served").0, 503);
        let other_path = url.replace("/jwks.json", "/other");
        assert_eq!(fetch(&client, &other_path).await.expect("served").0, 404);
        assert_eq!(jwks.fetches(), 3, "only GET /jwks.json counts");

        jwks.stop().await;
        assert!(!jwks.is_listening());
        assert!(
            fetch(&client, &url).await.is_err(),
            "a stopped provider answers"
        );
        jwks.set_keys(vec![ec.clone()]);
        jwks.set_available(true);
        jwks.listen();
        assert_eq!(jwks.url(), url);
        assert_eq!(
            fetch(&client, &url).await.expect("served again"),
            (200, json!({"keys": [ec]}))
        );
        assert_eq!(jwks.fetches(), 4);
    }

    #[tokio::test]
    async fn a_reserved_provider_refuses_connections_until_it_listens() {
        let jwks = JwksServer::reserve(Vec::new());
        let client = reqwest::Client::new();
        assert!(fetch(&client, &jwks.url()).await.is_err());
        jwks.listen();
        jwks.listen();
        assert_eq!(
            fetch(&client, &jwks.url()).await.expect("served"),
            (200, json!({"keys": []}))
        );
    }
}
