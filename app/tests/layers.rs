//! The service's modules form layers: a module may use only modules of lower layers, so
//! there is no import cycle and `config → startup → routes → service → domain/store` reads
//! one way. This test reads `src/` and fails naming the file and the reference that goes up
//! or sideways.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may use any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["domain", "lifecycle", "openapi", "telemetry"],
    &["store", "config"],
    &["error", "recorder", "registry"],
    &["auth", "service"],
    &["state"],
    &["routes"],
    &["startup"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/routes/devices.rs` → `routes`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// Every `crate::<name>` in the code, comments left out; the names inside
/// `use crate::{a, b::c}` too.
fn references(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                for item in group.split([',', '}']) {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push((number + 1, name));
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push((number + 1, name));
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut seen = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            violations.push(format!(
                "{}: module `{module}` has no layer in tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let code = std::fs::read_to_string(file).unwrap();
        for (line, target) in references(&code) {
            if target == module {
                continue;
            }
            *seen.entry(module.clone()).or_insert(0) += 1;
            match layer_of(&target) {
                Some(layer) if layer < own => {}
                _ => violations.push(format!(
                    "{}:{line}: `{module}` uses `crate::{target}`, which is not below it",
                    file.display()
                )),
            }
        }
    }
    assert!(
        seen.len() > 5,
        "found too few references to check: {seen:?}"
    );
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
