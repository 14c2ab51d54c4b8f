//! Cross-origin access for browser subscribers, per `cors.allowed_origins`.
//!
//! A listed origin is echoed with credentials allowed (so the `herald_token`
//! cookie can travel); `"*"` lets any origin in without credentials; an
//! unlisted origin gets no CORS headers at all and the browser blocks it.
//! Every `OPTIONS` request is answered here, preflight or not.

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap, HeaderValue},
        Method,
    },
    middleware::Next,
    web, Error, HttpResponse,
};

use crate::state::AppState;

/// How long browsers may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";
const ALLOWED_METHODS: &str = "GET, POST, OPTIONS";
const ALLOWED_HEADERS: &str = "authorization, content-type, last-event-id, cache-control";

/// The CORS answer for one origin.
#[derive(Debug, PartialEq, Eq)]
enum Allowance {
    /// Echo the origin, with credentials.
    Origin(HeaderValue),
    /// `*`, without credentials.
    Any,
}

fn allowance(allowed: &[String], origin: Option<&HeaderValue>) -> Option<Allowance> {
    let origin = origin?;
    let text = origin.to_str().ok()?;
    // `*` in the list is the wildcard, never a listed origin: a request
    // claiming to come from "*" gets no credentials.
    if allowed.iter().any(|o| o != "*" && o == text) {
        Some(Allowance::Origin(origin.clone()))
    } else if allowed.iter().any(|o| o == "*") {
        Some(Allowance::Any)
    } else {
        None
    }
}

fn add_headers(headers: &mut HeaderMap, allowance: Allowance) {
    match allowance {
        Allowance::Origin(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        Allowance::Any => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
}

/// The CORS headers for a response to `origin`, for transports that write
/// their own heads.
pub fn headers_for(allowed: &[String], origin: Option<&[u8]>) -> Vec<(&'static str, String)> {
    let origin = origin.and_then(|o| HeaderValue::from_bytes(o).ok());
    match allowance(allowed, origin.as_ref()) {
        None => Vec::new(),
        Some(Allowance::Any) => vec![("access-control-allow-origin", "*".to_owned())],
        Some(Allowance::Origin(origin)) => vec![
            (
                "access-control-allow-origin",
                origin.to_str().unwrap_or_default().to_owned(),
            ),
            ("access-control-allow-credentials", "true".to_owned()),
            ("vary", "Origin".to_owned()),
        ],
    }
}

/// The middleware.
///
/// # Errors
///
/// Whatever the wrapped service returns.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let allowed = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.settings.cors_allowed_origins.clone())
        .unwrap_or_default();
    let allowance = allowance(&allowed, req.headers().get(header::ORIGIN));
    if req.method() == Method::OPTIONS {
        let mut response = HttpResponse::NoContent();
        response.insert_header((header::ALLOW, ALLOWED_METHODS));
        let mut response = response.finish();
        if let Some(allowance) = allowance {
            let requested = req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned();
            let headers = response.headers_mut();
            add_headers(headers, allowance);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                requested.unwrap_or_else(|| HeaderValue::from_static(ALLOWED_HEADERS)),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE),
            );
        }
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    // The stream route decides its CORS headers itself, on both doors.
    let decided = response
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    if let Some(allowance) = allowance.filter(|_| !decided) {
        add_headers(response.headers_mut(), allowance);
    }
    Ok(response.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn listed_origins_are_echoed_and_star_allows_any() {
        let origin = HeaderValue::from_static("https://app.example");
        assert_eq!(
            allowance(&origins(&["https://app.example"]), Some(&origin)),
            Some(Allowance::Origin(origin.clone()))
        );
        assert_eq!(
            allowance(&origins(&["*"]), Some(&origin)),
            Some(Allowance::Any)
        );
        assert_eq!(
            allowance(&origins(&["https://other.example"]), Some(&origin)),
            None
        );
        assert_eq!(allowance(&[], Some(&origin)), None);
        assert_eq!(allowance(&origins(&["*"]), None), None);
    }
}
