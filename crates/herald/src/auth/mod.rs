//! Who may publish and who may subscribe to what.
//!
//! Publishers present an API key or a JWT; subscribers present a JWT unless
//! every topic they ask for is public. Tokens are HS256 JWTs signed with
//! `auth.jwt_secret`, or RS256/ES256 JWTs checked against
//! `auth.jwt_public_key_file` or, by `kid`, against an identity provider's
//! key set (`auth.jwks_url`, see [`jwks`]). Their `herald` claim lists the
//! topic patterns they cover: `{"herald": {"publish": [...], "subscribe":
//! [...]}}`; `auth.user_topics` adds topics named after the token's `sub`,
//! so an application's ordinary access token opens its user's own topics.
//!
//! What neither public topics nor a verified token covers goes to the
//! application's subscribe hook when one is configured ([`hook`]); a token
//! herald cannot verify then counts as no token, and the hook decides.
//!
//! API keys are compared as SHA-256 digests in constant time, so neither the
//! contents nor the length of a configured key leaks through timing.
//! `docs/protocol.md` describes the rules from the client's side.

pub mod hook;
pub mod jwks;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{http::header, HttpRequest};
use anyhow::{bail, Context};
use herald_broker::Topic;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::{
    hook::{Answer, Forwarded, Hook},
    jwks::{Jwks, Lookup},
};
use crate::{config::AuthSettings, error::ApiError, metrics::Metrics};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY: Duration = Duration::from_secs(30);
/// The cookie browsers may carry a subscriber token in.
pub const TOKEN_COOKIE: &str = "herald_token";
/// Longest `sub` put into a user topic.
const MAX_SUB_BYTES: usize = 128;
/// What `Retry-After` says while the identity provider's keys are missing.
const KEYS_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A topic pattern: an exact name, or a prefix followed by `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    prefix: String,
    wildcard: bool,
}

impl TopicPattern {
    /// Parses `pattern`.
    pub fn new(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => Self {
                prefix: prefix.to_owned(),
                wildcard: true,
            },
            None => Self {
                prefix: pattern.to_owned(),
                wildcard: false,
            },
        }
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &Topic) -> bool {
        if self.wildcard {
            topic.as_str().starts_with(&self.prefix)
        } else {
            topic.as_str() == self.prefix
        }
    }
}

fn covered(patterns: &[TopicPattern], topic: &Topic) -> bool {
    patterns.iter().any(|p| p.matches(topic))
}

/// What an authorized subscriber may do, and until when.
#[derive(Debug)]
pub struct Grant {
    /// When the stream must close: the token's expiry, or the end of the
    /// life the subscribe hook gave it, whichever comes first.
    pub expires_at: Option<SystemTime>,
}

/// What a subscribe request presents, copied out of its head.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    /// The `access_token` query parameter.
    pub query_token: Option<String>,
    /// The headers a subscribe hook is given (which hold the header and
    /// cookie forms of the token too).
    pub forwarded: Forwarded,
}

impl Credentials {
    /// The subscriber token: the `Authorization` header, else the
    /// `herald_token` cookie, else the query parameter when allowed.
    fn token(&self, query_allowed: bool) -> Option<&str> {
        fn text(value: &Option<Vec<u8>>) -> Option<&str> {
            std::str::from_utf8(value.as_deref()?).ok()
        }
        text(&self.forwarded.authorization)
            .and_then(bearer_token)
            .or_else(|| text(&self.forwarded.cookie).and_then(|c| cookie_value(c, TOKEN_COOKIE)))
            .or_else(|| self.query_token.as_deref().filter(|_| query_allowed))
    }
}

/// Why a subscribe request cannot open a stream.
#[derive(Debug)]
pub enum Refusal {
    /// Answer with this error (`401`, `403`).
    Denied(ApiError),
    /// Answer "retry later" (the over-capacity answer): the hook failed,
    /// or the keys a token needs have never been fetched.
    Retry,
}

/// The static part of a subscriber's check.
#[derive(Debug)]
pub enum Checked {
    /// Public topics and the token cover every topic.
    Granted(Grant),
    /// These topics are left for the subscribe hook.
    AskHook {
        /// The topics nothing else granted.
        topics: Vec<Topic>,
        /// The verified token's expiry, if a token granted some topics.
        token_expires_at: Option<SystemTime>,
    },
}

/// The node's authentication policy, built once from settings.
pub struct Auth {
    publish_keys: Vec<[u8; 32]>,
    /// `auth.jwt_secret` and `auth.jwt_public_key_file`.
    static_keys: Vec<jwks::Key>,
    jwks: Option<Arc<Jwks>>,
    validations: [(Algorithm, Validation); 3],
    public_topics: Vec<TopicPattern>,
    user_topics: Vec<String>,
    query_token: bool,
    hook: Option<Hook>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    exp: Option<u64>,
    /// Any JSON: a `sub` that is not a string opens no user topic.
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    herald: HeraldClaim,
}

#[derive(Debug, Default, Deserialize)]
struct HeraldClaim {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

/// Why a token was not accepted.
enum TokenError {
    /// Refused, with the reason for the client.
    Invalid(&'static str),
    /// The token needs the identity provider's keys, never fetched yet.
    KeysUnavailable,
}

impl Auth {
    /// Builds the policy; with `auth.jwks_url`, starts fetching the key set
    /// (so it must run inside the Tokio runtime).
    ///
    /// # Errors
    ///
    /// When `auth.jwt_public_key_file` cannot be read or holds no RSA or EC
    /// public key, or an HTTP client cannot be built.
    pub fn new(settings: &AuthSettings, metrics: &Metrics) -> anyhow::Result<Self> {
        let mut static_keys = Vec::new();
        if let Some(secret) = &settings.jwt_secret {
            static_keys.push(jwks::Key {
                algorithm: Algorithm::HS256,
                key: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
            });
        }
        if let Some(path) = &settings.jwt_public_key_file {
            static_keys.push(public_key(path)?);
        }
        let jwks = match &settings.jwks_url {
            Some(url) => {
                let jwks = Arc::new(Jwks::new(url.clone()).context("auth.jwks_url")?);
                jwks.spawn_refresh(settings.jwks_refresh);
                Some(jwks)
            }
            None => None,
        };
        let hook = match &settings.subscribe_hook_url {
            Some(url) => Some(
                Hook::new(
                    url.clone(),
                    settings.subscribe_hook_timeout,
                    settings.subscribe_hook_cache,
                    metrics.auth_hook.clone(),
                )
                .context("auth.subscribe_hook_url")?,
            ),
            None => None,
        };
        let validation = |algorithm| (algorithm, validation(algorithm, settings));
        Ok(Self {
            publish_keys: settings
                .publish_keys
                .iter()
                .map(|k| digest(k.as_bytes()))
                .collect(),
            static_keys,
            jwks,
            validations: [
                validation(Algorithm::HS256),
                validation(Algorithm::RS256),
                validation(Algorithm::ES256),
            ],
            public_topics: settings
                .public_topics
                .iter()
                .map(|p| TopicPattern::new(p))
                .collect(),
            user_topics: settings.user_topics.clone(),
            query_token: settings.query_token,
            hook,
        })
    }

    /// Whether subscribe requests may be put to the application's hook
    /// (only then are its origin and address worth keeping).
    pub fn has_hook(&self) -> bool {
        self.hook.is_some()
    }

    /// Whether publishing needs no credentials.
    pub fn publishing_is_open(&self) -> bool {
        self.publish_keys.is_empty() && self.static_keys.is_empty() && self.jwks.is_none()
    }

    /// Checks the publisher's credentials, before the body is read.
    ///
    /// Returns the topic patterns the credentials cover, `None` meaning all.
    ///
    /// # Errors
    ///
    /// `401` for missing or invalid credentials; `503` while the identity
    /// provider's keys a token needs have never been fetched.
    pub async fn authenticate_publisher(
        &self,
        req: &HttpRequest,
    ) -> Result<Option<Vec<TopicPattern>>, ApiError> {
        if self.publishing_is_open() {
            return Ok(None);
        }
        let token = bearer(req).ok_or_else(|| {
            ApiError::Unauthorized("publishing needs an API key or a JWT as a Bearer token".into())
        })?;
        let presented = digest(token.as_bytes());
        // Compare with every key, without stopping early.
        let known = self
            .publish_keys
            .iter()
            .fold(0u8, |hit, key| hit | key.ct_eq(&presented).unwrap_u8());
        if known == 1 {
            return Ok(None);
        }
        match self.verify(token).await {
            Ok(claims) => Ok(Some(patterns(&claims.herald.publish))),
            Err(TokenError::Invalid(reason)) => Err(ApiError::Unauthorized(reason.into())),
            Err(TokenError::KeysUnavailable) => Err(keys_unavailable()),
        }
    }

    /// Checks that the publisher's grant covers every topic.
    ///
    /// # Errors
    ///
    /// `403` naming the first topic outside the grant.
    pub fn authorize_publish<'a>(
        grant: &Option<Vec<TopicPattern>>,
        mut topics: impl Iterator<Item = &'a Topic>,
    ) -> Result<(), ApiError> {
        let Some(patterns) = grant else { return Ok(()) };
        match topics.find(|topic| !covered(patterns, topic)) {
            Some(topic) => Err(ApiError::Forbidden(format!(
                "the token does not allow publishing to {topic:?}"
            ))),
            None => Ok(()),
        }
    }

    /// Checks a subscriber's right to `topics` by public topics and token.
    /// Public topics need nothing; any other topic needs a token covering
    /// it (its `herald` claim or a user topic), or, with a subscribe hook,
    /// is left for the hook ([`Auth::ask_hook`]).
    ///
    /// # Errors
    ///
    /// Without a hook: `401` when a needed token is missing or invalid,
    /// `403` when it does not cover a requested topic. Retry while the keys
    /// a token needs have never been fetched.
    pub async fn check_subscriber(
        &self,
        credentials: &Credentials,
        topics: &[Topic],
    ) -> Result<Checked, Refusal> {
        let private: Vec<&Topic> = topics
            .iter()
            .filter(|t| !covered(&self.public_topics, t))
            .collect();
        if private.is_empty() {
            return Ok(Checked::Granted(Grant { expires_at: None }));
        }
        let token = credentials.token(self.query_token);
        let verified = match token {
            // Boxed: most subscribes never verify a token, and a stream's
            // setup future stays small without the key fetch inside it.
            Some(token) => Some(Box::pin(self.verify(token)).await),
            None => None,
        };
        let (granted, expires_at, invalid) = match verified {
            Some(Ok(claims)) => {
                let mut granted = patterns(&claims.herald.subscribe);
                granted.extend(self.user_patterns(claims.sub.as_ref()));
                let expires_at = claims.exp.map(|s| UNIX_EPOCH + Duration::from_secs(s));
                (granted, expires_at, None)
            }
            Some(Err(TokenError::KeysUnavailable)) => return Err(Refusal::Retry),
            Some(Err(TokenError::Invalid(reason))) => (Vec::new(), None, Some(reason)),
            None => (Vec::new(), None, None),
        };
        let remaining: Vec<Topic> = private
            .into_iter()
            .filter(|t| !covered(&granted, t))
            .cloned()
            .collect();
        if remaining.is_empty() {
            return Ok(Checked::Granted(Grant { expires_at }));
        }
        if self.hook.is_some() {
            return Ok(Checked::AskHook {
                topics: remaining,
                token_expires_at: expires_at,
            });
        }
        Err(Refusal::Denied(match (token, invalid) {
            (None, _) => ApiError::Unauthorized("these topics need a subscriber token".into()),
            (Some(_), Some(reason)) => ApiError::Unauthorized(reason.into()),
            (Some(_), None) => ApiError::Forbidden(format!(
                "the token does not allow subscribing to {:?}",
                remaining[0]
            )),
        }))
    }

    /// Asks the subscribe hook about the topics [`Auth::check_subscriber`]
    /// left to it.
    ///
    /// # Errors
    ///
    /// The hook's `401`/`403`; retry when it fails, times out or answers
    /// anything else.
    pub async fn ask_hook(
        &self,
        credentials: &Credentials,
        topics: &[Topic],
        token_expires_at: Option<SystemTime>,
    ) -> Result<Grant, Refusal> {
        let hook = self.hook.as_ref().expect("asked only when a hook is set");
        match hook.ask(&credentials.forwarded, topics).await {
            Ok(Answer::Allow { until }) => {
                let hook_end = until.map(|at| {
                    SystemTime::now() + at.saturating_duration_since(std::time::Instant::now())
                });
                let expires_at = match (token_expires_at, hook_end) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Ok(Grant { expires_at })
            }
            Ok(Answer::Deny(401)) => Err(Refusal::Denied(ApiError::Unauthorized(
                "the application's subscribe hook did not recognize these credentials".into(),
            ))),
            Ok(Answer::Deny(_)) => Err(Refusal::Denied(ApiError::Forbidden(
                "the application's subscribe hook refused these topics".into(),
            ))),
            Err(_) => Err(Refusal::Retry),
        }
    }

    /// The user topics `sub` opens: none unless it is a string of 1–128
    /// bytes of `A–Z a–z 0–9 _ - @ ~`, so it can never reach into another
    /// user's namespace (no `.`, `:`, `/`, `*`).
    fn user_patterns(&self, sub: Option<&serde_json::Value>) -> Vec<TopicPattern> {
        let Some(sub) = sub.and_then(serde_json::Value::as_str) else {
            return Vec::new();
        };
        let usable = (1..=MAX_SUB_BYTES).contains(&sub.len())
            && sub
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@' | b'~'));
        if !usable {
            return Vec::new();
        }
        self.user_topics
            .iter()
            .map(|template| TopicPattern::new(&template.replace("{sub}", sub)))
            .collect()
    }

    async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        const MALFORMED: &str = "the token is malformed or uses an unaccepted algorithm";
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid(MALFORMED))?;
        let algorithm = header.alg;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == algorithm) else {
            return Err(TokenError::Invalid(MALFORMED));
        };
        let mut keys: Vec<jwks::Key> = self
            .static_keys
            .iter()
            .filter(|k| k.algorithm == algorithm)
            .cloned()
            .collect();
        let mut unknown_kid = false;
        if let (Some(jwks), false) = (&self.jwks, algorithm == Algorithm::HS256) {
            match jwks.keys_for(header.kid.as_deref(), algorithm).await {
                // A `kid` names one key; a token without one may be signed
                // by any key of its algorithm.
                Lookup::Found(found) if header.kid.is_some() => keys = found,
                Lookup::Found(found) => keys.extend(found),
                Lookup::Unknown => unknown_kid = true,
                Lookup::NotFetched if keys.is_empty() => return Err(TokenError::KeysUnavailable),
                Lookup::NotFetched => {}
            }
        }
        if keys.is_empty() {
            return Err(TokenError::Invalid(if unknown_kid {
                "the token names a key (kid) the identity provider does not publish"
            } else if self.static_keys.is_empty() && self.jwks.is_none() {
                "this node accepts no JWTs"
            } else {
                MALFORMED
            }));
        }
        let mut last = None;
        for key in &keys {
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => last = Some(error),
            }
        }
        use jsonwebtoken::errors::ErrorKind;
        Err(TokenError::Invalid(
            match last.as_ref().map(jsonwebtoken::errors::Error::kind) {
                Some(ErrorKind::ExpiredSignature) => "the token has expired",
                Some(ErrorKind::ImmatureSignature) => "the token is not valid yet",
                Some(ErrorKind::InvalidSignature) => "the token signature is invalid",
                Some(ErrorKind::InvalidIssuer) => "the token's issuer (iss) is not accepted",
                Some(ErrorKind::InvalidAudience) => "the token's audience (aud) is not accepted",
                Some(ErrorKind::MissingRequiredClaim(claim)) if claim == "iss" => {
                    "the token has no issuer (iss)"
                }
                Some(ErrorKind::MissingRequiredClaim(claim)) if claim == "aud" => {
                    "the token has no audience (aud)"
                }
                _ => MALFORMED,
            },
        ))
    }
}

/// An HTTP client builder trusting the system's CA roots (`SSL_CERT_FILE`
/// and `SSL_CERT_DIR` honoured), for the JWKS and the subscribe hook.
pub(crate) fn http_client() -> reqwest::ClientBuilder {
    static ROOTS: std::sync::OnceLock<Vec<reqwest::Certificate>> = std::sync::OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system CA roots");
        }
        found
            .certs
            .iter()
            .filter_map(|cert| reqwest::Certificate::from_der(cert.as_ref()).ok())
            .collect()
    });
    roots
        .iter()
        .fold(reqwest::Client::builder(), |builder, cert| {
            builder.add_root_certificate(cert.clone())
        })
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
}

fn patterns(texts: &[String]) -> Vec<TopicPattern> {
    texts.iter().map(|p| TopicPattern::new(p)).collect()
}

fn keys_unavailable() -> ApiError {
    ApiError::Unavailable {
        detail: "the identity provider's keys have not been fetched yet; retry later",
        retry_after: KEYS_RETRY_AFTER,
    }
}

fn validation(algorithm: Algorithm, settings: &AuthSettings) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_nbf = true;
    // Tokens without `exp` are accepted (they never expire); `exp` and `nbf`
    // are enforced whenever present.
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    if let Some(issuer) = &settings.jwt_issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".into());
    }
    if let Some(audience) = &settings.jwt_audience {
        validation.set_audience(&[audience]);
        validation.validate_aud = true;
        validation.required_spec_claims.insert("aud".into());
    }
    validation
}

fn public_key(path: &Path) -> anyhow::Result<jwks::Key> {
    let pem = std::fs::read(path)
        .with_context(|| format!("auth.jwt_public_key_file: cannot read {}", path.display()))?;
    let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, key)
    } else {
        bail!(
            "auth.jwt_public_key_file: {} holds no RSA or EC public key in PEM form",
            path.display()
        )
    };
    Ok(jwks::Key {
        algorithm,
        key: Arc::new(key),
    })
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    bearer_token(req.headers().get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token of an `Authorization: Bearer <token>` header value.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name` in a `Cookie` header value.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name)
            .then(|| value.trim_matches('"'))
            .filter(|v| !v.is_empty())
    })
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            publish_keys: vec!["key-1".into()],
            jwt_secret: Some("secret".into()),
            public_topics: vec!["news.*".into()],
            user_topics: vec!["user.{sub}".into(), "user.{sub}.*".into()],
            ..AuthSettings::default()
        }
    }

    fn auth(settings: &AuthSettings) -> Auth {
        Auth::new(settings, &Metrics::new()).unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn topics(names: &[&str]) -> Vec<Topic> {
        names.iter().map(|n| Topic::new(n).unwrap()).collect()
    }

    fn credentials(header: Option<&str>, cookie: Option<&str>, query: Option<&str>) -> Credentials {
        Credentials {
            query_token: query.map(str::to_owned),
            forwarded: Forwarded {
                authorization: header.map(|h| h.as_bytes().to_vec()),
                cookie: cookie.map(|c| c.as_bytes().to_vec()),
                ..Forwarded::default()
            },
        }
    }

    /// The status a check answers: 200 granted, else the refusal's.
    async fn status(auth: &Auth, credentials: &Credentials, names: &[&str]) -> u16 {
        match auth.check_subscriber(credentials, &topics(names)).await {
            Ok(Checked::Granted(_)) => 200,
            Ok(Checked::AskHook { .. }) => 0,
            Err(Refusal::Denied(error)) => error.render().status.as_u16(),
            Err(Refusal::Retry) => 503,
        }
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let t = Topic::new("user.42").unwrap();
        assert!(TopicPattern::new("user.42").matches(&t));
        assert!(TopicPattern::new("user.*").matches(&t));
        assert!(TopicPattern::new("*").matches(&t));
        assert!(!TopicPattern::new("user.4").matches(&t));
        assert!(!TopicPattern::new("admin.*").matches(&t));
    }

    #[tokio::test]
    async fn publisher_key_or_scoped_jwt() {
        let auth = auth(&settings());
        let req = TestRequest::default().to_http_request();
        assert!(matches!(
            auth.authenticate_publisher(&req).await,
            Err(ApiError::Unauthorized(_))
        ));
        let req = TestRequest::default()
            .insert_header(("authorization", "Bearer key-1"))
            .to_http_request();
        assert_eq!(auth.authenticate_publisher(&req).await.unwrap(), None);
        let jwt = token(json!({"herald": {"publish": ["orders.*"]}, "exp": now() + 60}));
        let req = TestRequest::default()
            .insert_header(("authorization", format!("bearer {jwt}")))
            .to_http_request();
        let grant = auth.authenticate_publisher(&req).await.unwrap();
        assert!(Auth::authorize_publish(&grant, topics(&["orders.1"]).iter()).is_ok());
        assert!(matches!(
            Auth::authorize_publish(&grant, topics(&["orders.1", "users.1"]).iter()),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[tokio::test]
    async fn expired_tokens_are_refused_past_the_leeway_only() {
        let auth = auth(&settings());
        for (exp, expected) in [(now() - 10, 200), (now() - 120, 401)] {
            let jwt = token(json!({"herald": {"subscribe": ["*"]}, "exp": exp}));
            let header = format!("Bearer {jwt}");
            let credentials = credentials(Some(&header), None, None);
            assert_eq!(status(&auth, &credentials, &["private"]).await, expected);
        }
    }

    #[tokio::test]
    async fn subscribers_need_a_token_only_for_private_topics() {
        let auth = auth(&settings());
        let none = credentials(None, None, None);
        assert_eq!(status(&auth, &none, &["news.today"]).await, 200);
        assert_eq!(status(&auth, &none, &["news.today", "x.1"]).await, 401);
        let jwt = token(json!({"herald": {"subscribe": ["x.1"]}}));
        let query = credentials(None, None, Some(&jwt));
        assert_eq!(status(&auth, &query, &["x.1"]).await, 200);
        assert_eq!(status(&auth, &query, &["x.2"]).await, 403);
        let cookie = format!("theme=dark; {TOKEN_COOKIE}={jwt}; other=1");
        let cookie = credentials(None, Some(&cookie), None);
        assert_eq!(status(&auth, &cookie, &["x.1"]).await, 200);
        let no_query = auth_without_query_tokens();
        assert_eq!(status(&no_query, &query, &["x.1"]).await, 401);
    }

    fn auth_without_query_tokens() -> Auth {
        auth(&AuthSettings {
            query_token: false,
            ..settings()
        })
    }

    #[tokio::test]
    async fn a_token_signed_with_another_secret_is_refused() {
        let auth = auth(&settings());
        let forged = encode(
            &Header::default(),
            &json!({"herald": {"subscribe": ["*"]}}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        let credentials = credentials(None, None, Some(&forged));
        assert_eq!(status(&auth, &credentials, &["x.1"]).await, 401);
    }

    #[tokio::test]
    async fn user_topics_open_for_a_plain_sub_only() {
        let auth = auth(&settings());
        let as_sub =
            |sub: serde_json::Value| credentials(None, None, Some(&token(json!({"sub": sub}))));
        let user = as_sub(json!("42"));
        assert_eq!(status(&auth, &user, &["user.42"]).await, 200);
        assert_eq!(
            status(&auth, &user, &["user.42.orders", "news.x"]).await,
            200
        );
        assert_eq!(status(&auth, &user, &["user.43"]).await, 403);
        assert_eq!(status(&auth, &user, &["user.420"]).await, 403);
        let long = "a".repeat(129);
        for hostile in [
            json!("*"),
            json!("a b"),
            json!("../x"),
            json!("4.2"),
            json!("a:b"),
            json!(""),
            json!(long),
            json!(42),
        ] {
            let user = as_sub(hostile.clone());
            for topic in ["user.42", "user.4.2", "user.*", "user."] {
                if let Ok(topic) = Topic::new(topic) {
                    let credentials = &user;
                    assert_eq!(
                        status(&auth, credentials, &[topic.as_str()]).await,
                        403,
                        "sub {hostile} opened {topic:?}"
                    );
                }
            }
        }
        assert_eq!(
            status(
                &auth,
                &as_sub(json!("a".repeat(128))),
                &[&format!("user.{}", "a".repeat(128))]
            )
            .await,
            200
        );
    }

    #[tokio::test]
    async fn issuer_and_audience_bind_every_token() {
        let auth = auth(&AuthSettings {
            jwt_issuer: Some("https://id.example".into()),
            jwt_audience: Some("herald".into()),
            ..settings()
        });
        let check = |claims: serde_json::Value| {
            let mut claims = claims;
            claims["herald"] = json!({"subscribe": ["*"]});
            credentials(None, None, Some(&token(claims)))
        };
        let ok = check(json!({"iss": "https://id.example", "aud": ["other", "herald"]}));
        assert_eq!(status(&auth, &ok, &["x"]).await, 200);
        for bad in [
            json!({"iss": "https://evil.example", "aud": "herald"}),
            json!({"iss": "https://id.example", "aud": "other"}),
            json!({"aud": "herald"}),
            json!({"iss": "https://id.example"}),
        ] {
            assert_eq!(
                status(&auth, &check(bad.clone()), &["x"]).await,
                401,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn with_a_hook_what_nothing_grants_goes_to_it() {
        let auth = auth(&AuthSettings {
            subscribe_hook_url: Some("http://127.0.0.1:9/hook".parse().unwrap()),
            ..settings()
        });
        let opaque = credentials(Some("Bearer sess-123"), None, None);
        match auth
            .check_subscriber(&opaque, &topics(&["news.a", "x.1", "x.2"]))
            .await
        {
            Ok(Checked::AskHook { topics: asked, .. }) => {
                assert_eq!(asked, topics(&["x.1", "x.2"]))
            }
            other => panic!("expected the hook to be asked, got {other:?}"),
        }
        let jwt = token(json!({"herald": {"subscribe": ["x.1"]}}));
        let partial = credentials(None, None, Some(&jwt));
        match auth
            .check_subscriber(&partial, &topics(&["x.1", "x.2"]))
            .await
        {
            Ok(Checked::AskHook { topics: asked, .. }) => assert_eq!(asked, topics(&["x.2"])),
            other => panic!("expected the hook to be asked, got {other:?}"),
        }
        assert_eq!(status(&auth, &partial, &["x.1", "news.b"]).await, 200);
    }
}
