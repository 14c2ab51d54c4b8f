//! The lean stream door: herald's own accept loop, and its own HTTP/1.1
//! path for connections that open with a stream request.
//!
//! herald accepts every connection itself and looks (without consuming) at
//! the first bytes. A connection that opens with `GET /v1/events` is served
//! here, by a stream path that keeps no read buffer and writes shared frames
//! straight from the broker with `writev`: an idle stream costs about a
//! kilobyte of memory instead of the ~20 KB a general-purpose HTTP
//! connection keeps. Every other connection — publishes, health checks,
//! metrics, and streams requested on a reused keep-alive connection — is
//! handed to the actix workers unchanged, so the rest of the API keeps a
//! full HTTP implementation (streams there go through
//! [`crate::actix_stream`]). Both doors share [`crate::subscribe`].

mod accept;
mod first_request;
mod head;
mod pump;

pub use accept::{serve, Handoff};
pub use head::REQUEST_HEAD_TIMEOUT;
