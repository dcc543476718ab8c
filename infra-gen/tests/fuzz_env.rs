//! Property tests: arbitrary and mutated environment files never panic the loader or the
//! renderer; they are either rendered or refused with diagnostics. `PROPTEST_CASES` raises the
//! number of cases (`scripts/soak` runs many more).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use infra_gen::env;
use infra_gen::render::Renderer;
use proptest::prelude::*;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

/// Loads and, when valid, renders; the property is that this returns at all.
fn load_and_render(defaults: &str, environment: &str) {
    let loaded = env::load_sources(
        vec![
            (
                PathBuf::from("environments/_defaults.yaml"),
                defaults.to_owned(),
            ),
            (
                PathBuf::from("environments/staging.yaml"),
                environment.to_owned(),
            ),
        ],
        Some("mr-1"),
    );
    for d in &loaded.diagnostics {
        // Every diagnostic can be shown.
        let _ = d.to_string();
    }
    if loaded.environments.is_empty() {
        assert!(loaded.has_errors(), "refused without saying why");
    }
    let renderer = Renderer::new(None).unwrap();
    for environment in &loaded.environments {
        if let Ok(manifests) = renderer.render(environment) {
            infra_gen::tree::files(environment, &manifests).unwrap();
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceScalar { at: usize, with: String },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let yaml_bits = prop::sample::select(vec![
        ":",
        " ",
        "\n",
        "- ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "#",
        "'",
        "\"",
        "&a ",
        "*a",
        "!tag ",
        "|",
        ">",
        "~",
        "null",
        "0",
        "-1",
        "1e999",
        "true",
        "\t",
        "  ",
        "workloads:",
        "kind: cron",
        "replicas:",
        "${",
        "é",
    ]);
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::collection::vec(yaml_bits, 1..4)).prop_map(|(at, bits)| {
            Mutation::Insert {
                at,
                text: bits.concat(),
            }
        }),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "-5",
                "0",
                "99999999999",
                "\"\"",
                "[]",
                "{}",
                "x",
                "1.5",
                "null",
                "ec2",
                "tcp",
                "blue-green",
                "[10, 50, 100]"
            ])
        )
            .prop_map(|(at, with)| Mutation::ReplaceScalar {
                at,
                with: with.to_owned()
            }),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let floor = |s: &str, at: usize| {
        let mut at = at % (s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match mutation {
        Mutation::Delete { at, len } => {
            let start = floor(text, *at);
            let end = floor(text, (start + len).min(text.len()));
            format!("{}{}", &text[..start], &text[end.max(start)..])
        }
        Mutation::Insert { at, text: bit } => {
            let at = floor(text, *at);
            format!("{}{bit}{}", &text[..at], &text[at..])
        }
        Mutation::DuplicateLine(i) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = i % lines.len();
                lines.insert(i, lines[i]);
            }
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let n = lines.len();
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
        Mutation::ReplaceScalar { at, with } => {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if !lines.is_empty() {
                let i = at % lines.len();
                if let Some(colon) = lines[i].find(": ") {
                    lines[i] = format!("{}: {with}", &lines[i][..colon]);
                }
            }
            lines.join("\n")
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        load_and_render("", &text);
    }

    #[test]
    fn mutated_real_files_never_panic(
        defaults_mutations in prop::collection::vec(mutation(), 0..3),
        env_mutations in prop::collection::vec(mutation(), 1..6),
        which in 0..3usize,
    ) {
        let environment = repo_file(["environments/staging.yaml", "environments/production.yaml", "environments/review.yaml"][which]);
        let defaults = defaults_mutations.iter().fold(repo_file("environments/_defaults.yaml"), |t, m| apply(&t, m));
        let environment = env_mutations.iter().fold(environment, |t, m| apply(&t, m));
        load_and_render(&defaults, &environment);
    }

    #[test]
    fn mutated_example_files_never_panic(env_mutations in prop::collection::vec(mutation(), 1..6)) {
        let defaults = env_mutations.iter().fold(repo_file("examples/mini-hunter/environments/_defaults.yaml"), |t, m| apply(&t, m));
        load_and_render(&defaults, &repo_file("examples/mini-hunter/environments/production.yaml"));
    }
}
