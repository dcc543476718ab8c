//! `infra-gen schema`: the JSON Schema of environment files, for editors
//! (`environments/schema.json`, referenced by a `yaml-language-server` modeline).

use crate::error::Result;

/// Prints the schema.
pub fn run() -> Result<()> {
    crate::outln!("{}", schema_text());
    Ok(())
}

/// The schema as pretty JSON (what `environments/schema.json` must contain).
pub fn schema_text() -> String {
    serde_json::to_string_pretty(&crate::env::schema::json_schema()).unwrap_or_default()
}
