//! Test support shared by the end-to-end suites: the API-server double and the harness that
//! runs the real `infra-gen` binary against it (or against a real cluster).

pub mod apiserver;
pub mod awsproxy;
pub mod changelog;
pub mod harness;
pub mod proxy;
