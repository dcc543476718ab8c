#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

//! Integration tests of the check-in service. Each test spawns the service on a random port
//! with its own database on a real MongoDB wire-protocol server (`MONGODB_URI`, started by
//! `./scripts/test`), and talks to it over HTTP like a client or an operator would.

mod audit;
mod checkin;
mod devices;
mod health;
mod helpers;
mod outage;
mod replicas;
mod shutdown;
mod store_contract;
