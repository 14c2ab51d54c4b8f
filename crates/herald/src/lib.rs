//! herald: a horizontally scaled Server-Sent Events push gateway.
//!
//! This crate is glue: configuration, the HTTP routes and the stream
//! lifecycle around `herald-broker`. The `herald` binary is a thin `main`
//! over [`cli`] and [`server`].
#![warn(missing_docs)]

pub mod actix_stream;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod cors;
pub mod error;
pub mod ingest;
pub mod lean_door;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod open_streams;
pub mod positions;
pub mod routes;
pub mod server;
pub mod state;
pub mod stream;
pub mod subscribe;
pub mod workers;
