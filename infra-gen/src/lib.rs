//! infra-gen: environment files → manifests tree → cluster.
//!
//! Data flows `env` (parse, merge defaults, validate) → `render` (templates → checked
//! objects) → `tree` (the committed `manifests/` directory) → apply/rollout.
//! `commands` holds one module per subcommand; `cli` their arguments.

pub mod capacity;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod eks;
pub mod elb;
pub mod env;
pub mod error;
pub mod render;
pub mod rollout;
pub mod tree;
