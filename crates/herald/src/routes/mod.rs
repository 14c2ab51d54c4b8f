//! HTTP routes, one module each; every module exports `configure` for the
//! app builder.

pub mod assets;
pub mod events;
pub mod health;
pub mod publish;
pub mod topics;

use actix_web::{HttpRequest, HttpResponse};

use crate::error::ApiError;

/// Answers a known path called with the wrong method.
pub fn method_not_allowed(
    allow: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone {
    move |req: HttpRequest| {
        std::future::ready(Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        }))
    }
}

/// Answers any unknown path.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(req.path().to_owned()))
}
