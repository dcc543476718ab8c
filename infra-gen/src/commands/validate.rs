//! `infra-gen validate`: environment files only — structure and rules — without rendering.

use std::path::Path;

use crate::cli::ValidateArgs;
use crate::error::Result;

/// Validates every environment file.
pub fn run(root: &Path, args: &ValidateArgs) -> Result<()> {
    let environments = super::load_environments(root, &[], args.instance.as_deref())?;
    let names: Vec<&str> = environments.iter().map(|e| e.name.as_str()).collect();
    crate::outln!("{} environment(s) valid: {}", names.len(), names.join(", "));
    Ok(())
}
