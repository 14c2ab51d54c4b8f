//! herald: a horizontally scaled Server-Sent Events push gateway.
//!
//! This crate is glue: configuration, the HTTP routes and the stream
//! lifecycle around `herald-broker`. The `herald` binary is a thin `main`
//! over [`cli`] and [`server`].
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;
pub mod cors;
pub mod error;
pub mod ingest;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod native;
pub mod positions;
pub mod routes;
pub mod server;
pub mod socket;
pub mod state;
pub mod stream;
pub mod subscribe;
pub mod workers;
