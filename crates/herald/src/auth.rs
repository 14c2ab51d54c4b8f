//! Who may publish and who may subscribe to what.
//!
//! Publishers present an API key or a JWT; subscribers present a JWT unless
//! every topic they ask for is public. Tokens are HS256 JWTs signed with
//! `auth.jwt_secret`, or RS256/ES256 JWTs checked against
//! `auth.jwt_public_key_file`. Their `herald` claim lists the topic patterns
//! they cover: `{"herald": {"publish": [...], "subscribe": [...]}}`.
//!
//! API keys are compared as SHA-256 digests in constant time, so neither the
//! contents nor the length of a configured key leaks through timing.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{http::header, HttpRequest};
use anyhow::{bail, Context};
use herald_broker::Topic;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{config::AuthSettings, error::ApiError};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY: Duration = Duration::from_secs(30);
/// The cookie browsers may carry a subscriber token in.
pub const TOKEN_COOKIE: &str = "herald_token";

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

/// What a valid subscriber token allows, and until when.
#[derive(Debug)]
pub struct Grant {
    /// When the token expires; the stream is closed then.
    pub expires_at: Option<SystemTime>,
}

/// The node's authentication policy, built once from settings.
pub struct Auth {
    publish_keys: Vec<[u8; 32]>,
    verifiers: Vec<(DecodingKey, Validation)>,
    public_topics: Vec<TopicPattern>,
    query_token: bool,
}

#[derive(Debug, Deserialize)]
struct Claims {
    exp: Option<u64>,
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

impl Auth {
    /// Builds the policy.
    ///
    /// # Errors
    ///
    /// When `auth.jwt_public_key_file` cannot be read or holds no RSA or EC
    /// public key.
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        let mut verifiers = Vec::new();
        if let Some(secret) = &settings.jwt_secret {
            verifiers.push((
                DecodingKey::from_secret(secret.as_bytes()),
                validation(Algorithm::HS256),
            ));
        }
        if let Some(path) = &settings.jwt_public_key_file {
            verifiers.extend(public_key_verifiers(path)?);
        }
        Ok(Self {
            publish_keys: settings
                .publish_keys
                .iter()
                .map(|k| digest(k.as_bytes()))
                .collect(),
            verifiers,
            public_topics: settings
                .public_topics
                .iter()
                .map(|p| TopicPattern::new(p))
                .collect(),
            query_token: settings.query_token,
        })
    }

    /// Whether publishing needs no credentials.
    pub fn publishing_is_open(&self) -> bool {
        self.publish_keys.is_empty() && self.verifiers.is_empty()
    }

    /// Checks the publisher's credentials, before the body is read.
    ///
    /// Returns the topic patterns the credentials cover, `None` meaning all.
    ///
    /// # Errors
    ///
    /// `401` for missing or invalid credentials.
    pub fn authenticate_publisher(
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
        let claims = self.verify(token)?;
        Ok(Some(
            claims
                .herald
                .publish
                .iter()
                .map(|p| TopicPattern::new(p))
                .collect(),
        ))
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

    /// Checks a subscriber's right to `topics`. Public topics need nothing;
    /// any other topic needs a token covering it, from the `Authorization`
    /// header, the `herald_token` cookie, or `query_token` (the
    /// `access_token` query parameter) when allowed.
    ///
    /// # Errors
    ///
    /// `401` when a needed token is missing or invalid, `403` when it does
    /// not cover a requested topic.
    pub fn authorize_subscriber(
        &self,
        authorization: Option<&str>,
        cookie: Option<&str>,
        query_token: Option<&str>,
        topics: &[Topic],
    ) -> Result<Grant, ApiError> {
        let private: Vec<&Topic> = topics
            .iter()
            .filter(|t| !covered(&self.public_topics, t))
            .collect();
        if private.is_empty() {
            return Ok(Grant { expires_at: None });
        }
        let token = authorization
            .and_then(bearer_token)
            .or_else(|| cookie.and_then(|c| cookie_value(c, TOKEN_COOKIE)))
            .or_else(|| query_token.filter(|_| self.query_token))
            .ok_or_else(|| ApiError::Unauthorized("these topics need a subscriber token".into()))?;
        let claims = self.verify(token)?;
        let patterns: Vec<TopicPattern> = claims
            .herald
            .subscribe
            .iter()
            .map(|p| TopicPattern::new(p))
            .collect();
        if let Some(topic) = private.iter().find(|t| !covered(&patterns, t)) {
            return Err(ApiError::Forbidden(format!(
                "the token does not allow subscribing to {topic:?}"
            )));
        }
        Ok(Grant {
            expires_at: claims.exp.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        })
    }

    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        if self.verifiers.is_empty() {
            return Err(ApiError::Unauthorized("this node accepts no JWTs".into()));
        }
        let mut last = None;
        for (key, validation) in &self.verifiers {
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => last = Some(error),
            }
        }
        let reason = match last.as_ref().map(jsonwebtoken::errors::Error::kind) {
            Some(jsonwebtoken::errors::ErrorKind::ExpiredSignature) => "the token has expired",
            Some(jsonwebtoken::errors::ErrorKind::ImmatureSignature) => {
                "the token is not valid yet"
            }
            Some(jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                "the token signature is invalid"
            }
            _ => "the token is malformed or uses an unaccepted algorithm",
        };
        Err(ApiError::Unauthorized(reason.into()))
    }
}

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_nbf = true;
    validation.validate_aud = false;
    // Tokens without `exp` are accepted (they never expire); `exp` and `nbf`
    // are enforced whenever present.
    validation.required_spec_claims.clear();
    validation
}

fn public_key_verifiers(path: &Path) -> anyhow::Result<Vec<(DecodingKey, Validation)>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("auth.jwt_public_key_file: cannot read {}", path.display()))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(vec![(key, validation(Algorithm::RS256))]);
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok(vec![(key, validation(Algorithm::ES256))]);
    }
    bail!(
        "auth.jwt_public_key_file: {} holds no RSA or EC public key in PEM form",
        path.display()
    )
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
            jwt_public_key_file: None,
            public_topics: vec!["news.*".into()],
            query_token: true,
        }
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

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let t = Topic::new("user.42").unwrap();
        assert!(TopicPattern::new("user.42").matches(&t));
        assert!(TopicPattern::new("user.*").matches(&t));
        assert!(TopicPattern::new("*").matches(&t));
        assert!(!TopicPattern::new("user.4").matches(&t));
        assert!(!TopicPattern::new("admin.*").matches(&t));
    }

    #[test]
    fn publisher_key_or_scoped_jwt() {
        let auth = Auth::new(&settings()).unwrap();
        let req = TestRequest::default().to_http_request();
        assert!(matches!(
            auth.authenticate_publisher(&req),
            Err(ApiError::Unauthorized(_))
        ));
        let req = TestRequest::default()
            .insert_header(("authorization", "Bearer key-1"))
            .to_http_request();
        assert_eq!(auth.authenticate_publisher(&req).unwrap(), None);
        let jwt = token(json!({"herald": {"publish": ["orders.*"]}, "exp": now() + 60}));
        let req = TestRequest::default()
            .insert_header(("authorization", format!("bearer {jwt}")))
            .to_http_request();
        let grant = auth.authenticate_publisher(&req).unwrap();
        assert!(Auth::authorize_publish(&grant, topics(&["orders.1"]).iter()).is_ok());
        assert!(matches!(
            Auth::authorize_publish(&grant, topics(&["orders.1", "users.1"]).iter()),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn expired_tokens_are_refused_past_the_leeway_only() {
        let auth = Auth::new(&settings()).unwrap();
        let check = |exp: u64| {
            let jwt = token(json!({"herald": {"subscribe": ["*"]}, "exp": exp}));
            let header = format!("Bearer {jwt}");
            auth.authorize_subscriber(Some(&header), None, None, &topics(&["private"]))
        };
        assert!(check(now() - 10).is_ok());
        assert!(matches!(check(now() - 120), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn subscribers_need_a_token_only_for_private_topics() {
        let auth = Auth::new(&settings()).unwrap();
        let check =
            |header: Option<&str>, cookie: Option<&str>, query: Option<&str>, names: &[&str]| {
                auth.authorize_subscriber(header, cookie, query, &topics(names))
            };
        assert!(check(None, None, None, &["news.today"]).is_ok());
        assert!(matches!(
            check(None, None, None, &["news.today", "user.1"]),
            Err(ApiError::Unauthorized(_))
        ));
        let jwt = token(json!({"herald": {"subscribe": ["user.1"]}}));
        let grant = check(None, None, Some(&jwt), &["user.1"]).unwrap();
        assert!(grant.expires_at.is_none());
        assert!(matches!(
            check(None, None, Some(&jwt), &["user.2"]),
            Err(ApiError::Forbidden(_))
        ));
        let cookie = format!("theme=dark; {TOKEN_COOKIE}={jwt}; other=1");
        assert!(check(None, Some(&cookie), None, &["user.1"]).is_ok());
        let no_query = Auth::new(&AuthSettings {
            query_token: false,
            ..settings()
        })
        .unwrap();
        assert!(matches!(
            no_query.authorize_subscriber(None, None, Some(&jwt), &topics(&["user.1"])),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let auth = Auth::new(&settings()).unwrap();
        let forged = encode(
            &Header::default(),
            &json!({"herald": {"subscribe": ["*"]}}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert!(matches!(
            auth.authorize_subscriber(None, None, Some(&forged), &topics(&["user.1"])),
            Err(ApiError::Unauthorized(_))
        ));
    }
}
