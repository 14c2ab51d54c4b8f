//! herald's end-to-end tests live in `tests/tests/`, one file per area of
//! the protocol (docs/protocol.md). Each test starts its own `herald serve` on
//! port 0 through `herald-testkit`, so tests run in parallel, and talks to
//! it over real HTTP. This library is empty: shared helpers belong in the
//! test kit, where the load generator can use them too.
