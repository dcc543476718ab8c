//! infra-gen: environment files → manifests tree → cluster.
//!
//! Data flows `env` (parse, merge defaults, validate) → `render` (templates → checked
//! objects) → `tree` (the committed `manifests/` directory) → apply/rollout.
//! `commands` holds one module per subcommand; `cli` their arguments.

pub mod capacity;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod duration;
pub mod eks;
pub mod elb;
pub mod env;
pub mod error;
pub mod gateway;
pub mod render;
pub mod rollout;
pub mod tree;

/// `println!` for a command's output that ends the process quietly (exit 141, as a tool killed
/// by SIGPIPE) when the reader went away — `infra-gen plan -o json | head -c1` — instead of
/// panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(error) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            $crate::stdout_failed(error);
        }
    }};
}

/// `print!` with the same care as [`outln!`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(error) = write!(out, $($arg)*).and_then(|()| out.flush()) {
            $crate::stdout_failed(error);
        }
    }};
}

/// What a failed write to stdout does: nothing more to say when the pipe closed.
pub fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() != std::io::ErrorKind::BrokenPipe {
        eprintln!("infra-gen: cannot write to stdout: {error}");
        std::process::exit(i32::from(error::exit::FAILED));
    }
    std::process::exit(i32::from(error::exit::CLOSED_PIPE))
}
