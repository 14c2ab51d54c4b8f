//! The one error type of the HTTP API, rendered as `application/problem+json`.

use std::time::Duration;

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};
use herald_broker::{error_chain, BrokerError};
use serde::Serialize;

/// Everything a request can fail with. Each variant picks its status; the
/// text is the problem's `detail`, written for the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a missing field, a bad name or value.
    #[error("{0}")]
    BadRequest(String),
    /// A body, payload or batch over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// A request head with too many or too large header fields.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The client stopped sending its request body.
    #[error("{0}")]
    Timeout(String),
    /// Missing or invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that do not cover the request.
    #[error("{0}")]
    Forbidden(String),
    /// No such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists, the method does not.
    #[error("method {method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the route takes.
        allow: &'static str,
    },
    /// The node is not ready (broker down or draining).
    #[error("{0}")]
    NotReady(&'static str),
    /// Something the request needs is missing for now: the broker cannot
    /// store events, or the identity provider's keys were never fetched.
    #[error("{detail}")]
    Unavailable {
        /// What is missing, for the client.
        detail: &'static str,
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// A bug or an unexpected broker answer. Logged once where it happens;
    /// the client only learns that it happened.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::TooLarge(_) => "too-large",
            ApiError::Timeout(_) => "request-timeout",
            ApiError::HeadersTooLarge(_) => "headers-too-large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed { .. } => "method-not-allowed",
            ApiError::NotReady(_) => "not-ready",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::Unavailable { retry_after, .. } => {
                tracing::warn!(error = %error_chain(&error), "broker unavailable");
                ApiError::Unavailable {
                    detail: "the broker is unavailable; retry later",
                    retry_after,
                }
            }
            other => {
                tracing::error!(error = %error_chain(&other), "broker error");
                ApiError::Internal
            }
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
}

/// A problem rendered for the wire: status, extra headers and the
/// problem+json body. Shared by actix and herald's own stream path.
#[derive(Debug)]
pub struct Rendered {
    /// The status code.
    pub status: StatusCode,
    /// Headers besides `Content-Type`.
    pub headers: Vec<(header::HeaderName, String)>,
    /// The problem+json document.
    pub body: String,
}

impl ApiError {
    /// Renders the problem.
    pub fn render(&self) -> Rendered {
        let status = self.status_code();
        let problem = Problem {
            kind: format!("urn:herald:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let headers = match self {
            ApiError::Unavailable { retry_after, .. } => {
                vec![(
                    header::RETRY_AFTER,
                    retry_after.as_secs().max(1).to_string(),
                )]
            }
            ApiError::MethodNotAllowed { allow, .. } => vec![(header::ALLOW, (*allow).to_owned())],
            ApiError::Unauthorized(_) => vec![(header::WWW_AUTHENTICATE, "Bearer".to_owned())],
            _ => Vec::new(),
        };
        let body = serde_json::to_string(&problem).expect("a problem always serializes");
        Rendered {
            status,
            headers,
            body,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotReady(_) | ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let rendered = self.render();
        let mut response = HttpResponse::build(rendered.status);
        response.content_type(PROBLEM_JSON);
        for (name, value) in rendered.headers {
            response.insert_header((name, value));
        }
        response.body(rendered.body)
    }
}

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";
