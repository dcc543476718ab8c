//! controltower, the check-in service.
//!
//! Data flows `config` → `startup` → `routes` → `service` → `domain`/`store`:
//! - [`config`] turns flags and environment variables into typed [`config::Settings`];
//! - [`startup`] binds the listener, builds the [`state`] and the router, and runs until
//!   SIGTERM has drained;
//! - [`state`] is what every handler can reach (services, snapshot, tokens, lifecycle);
//! - [`routes`] extract and parse requests, call a [`service`], and answer;
//! - [`service`] holds the use cases (check-in, upload completion, registrations);
//! - [`domain`] holds the types that can only exist when valid (`DeviceId`, `Registration`);
//! - [`registry`] is the in-memory snapshot of active registrations that answers every check-in;
//! - [`recorder`] writes the check-ins of registered devices in batches;
//! - [`store`] is the only place that talks to MongoDB (or the embedded in-memory store).

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod lifecycle;
pub mod openapi;
pub mod recorder;
pub mod registry;
pub mod routes;
pub mod service;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
