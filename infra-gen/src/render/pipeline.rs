//! The GitLab pipeline against the environments: a delayed `infra-gen finalize` job must not
//! start before the scale-down delay it waits for has passed. It would find nothing due,
//! say so and end green, and the previous slot would keep running until some later
//! `finalize` or `apply` — a delay nobody chose. Checked by `render` (and so by CI's
//! `render --check`), with the position of the job's `start_in`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::env::Environment;
use crate::env::diagnostic::Diagnostic;
use crate::env::model::Strategy;
use crate::env::yaml::{self, KeyPath};

/// The pipeline file, relative to the project root.
pub const PIPELINE: &str = ".gitlab-ci.yml";

/// Top-level keys of a pipeline that are not jobs.
const KEYWORDS: [&str; 10] = [
    "stages",
    "variables",
    "workflow",
    "default",
    "include",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
];

/// Seconds of a GitLab duration such as `11 minutes`, `1 hour 30 min`, `90 seconds`.
pub fn gitlab_seconds(text: &str) -> Option<u64> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty() && *w != "and" && *w != "in")
        .collect();
    let mut total = 0;
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        let split = word
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(word.len());
        let (number, mut unit) = word.split_at(split);
        let number: u64 = number.parse().ok()?;
        if unit.is_empty() {
            i += 1;
            unit = words.get(i).copied().unwrap_or("s");
        }
        let factor = match unit.trim_end_matches('s') {
            "" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hr" | "hour" => 3600,
            "d" | "day" => 86_400,
            "w" | "week" => 604_800,
            _ => return None,
        };
        total += number * factor;
        i += 1;
    }
    (!words.is_empty()).then_some(total)
}

/// The value of `key` of a job, following `extends` (the job's own value first).
fn resolved<'a>(jobs: &'a serde_json::Map<String, Json>, job: &str, key: &str) -> Option<&'a Json> {
    let mut seen = Vec::new();
    let mut queue = vec![job.to_owned()];
    while let Some(name) = queue.pop() {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        let definition = jobs.get(&name)?;
        if let Some(value) = definition.get(key) {
            return Some(value);
        }
        match definition.get("extends") {
            Some(Json::String(parent)) => queue.push(parent.clone()),
            Some(Json::Array(parents)) => queue.extend(
                parents
                    .iter()
                    .rev()
                    .filter_map(|p| p.as_str().map(str::to_owned)),
            ),
            _ => {}
        }
    }
    None
}

/// The environment a finalize command line names (`--env X`, `--env=X`, `--env "$VAR"`).
fn env_of(line: &str, variables: &BTreeMap<String, String>) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = words.iter().enumerate().find_map(|(i, w)| {
        if let Some(v) = w.strip_prefix("--env=") {
            Some(v.to_owned())
        } else if *w == "--env" {
            words.get(i + 1).map(|v| (*v).to_owned())
        } else {
            None
        }
    })?;
    let value = value.trim_matches(|c| c == '"' || c == '\'');
    let variable = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'));
    match variable {
        Some(name) => variables.get(name).cloned(),
        None => Some(value.to_owned()),
    }
}

/// The blue-green workload of the environment with the longest scale-down delay, and it.
fn longest_delay(env: &Environment) -> Option<(String, u64)> {
    env.spec
        .workloads
        .iter()
        .filter_map(|(workload, w)| {
            let rollout = w.rollout.as_ref()?;
            (rollout.strategy == Strategy::BlueGreen).then(|| {
                (
                    workload.clone(),
                    u64::from(rollout.scale_down_delay_seconds.unwrap_or(600)),
                )
            })
        })
        .max_by_key(|(_, d)| *d)
}

/// The deploy component's includes (`include:` entries, local or `component:`, whose inputs
/// name an `environment` and a `finalize_delay`): its finalize job starts that long after the
/// deploy.
fn check_includes(
    node: &yaml::Node,
    pipeline: &Json,
    environments: &[Environment],
    out: &mut Vec<Diagnostic>,
) {
    let includes: Vec<(KeyPath, &Json)> = match pipeline.get("include") {
        Some(Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (KeyPath::default().key("include").index(i), item))
            .collect(),
        Some(item @ Json::Object(_)) => vec![(KeyPath::default().key("include"), item)],
        _ => Vec::new(),
    };
    for (path, include) in includes {
        let inputs = include.get("inputs");
        let input = |key: &str| inputs.and_then(|i| i.get(key)).and_then(Json::as_str);
        let (Some(env_name), Some(start_in)) = (input("environment"), input("finalize_delay"))
        else {
            continue;
        };
        let Some(env) = environments.iter().find(|e| e.name == env_name) else {
            continue;
        };
        let Some((workload, delay)) = longest_delay(env) else {
            continue;
        };
        let at = path.key("inputs").key("finalize_delay");
        match gitlab_seconds(start_in) {
            Some(seconds) if seconds >= delay => {}
            seconds => out.push(
                Diagnostic::error(
                    Some(node.span_for(&at)),
                    at.to_string(),
                    match seconds {
                        Some(seconds) => format!(
                            "the included finalize-{env_name} job starts {start_in:?} ({seconds} s) after the deploy, before the {delay} s scale-down delay of workload {workload} has passed: it would scale nothing down, and the previous slot would keep running until a later finalize or apply"
                        ),
                        None => format!(
                            "finalize_delay {start_in:?} is not a GitLab duration such as \"11 minutes\""
                        ),
                    },
                )
                .with_hint(format!(
                    "set finalize_delay: {} minutes (or more), or lower rollout.scaleDownDelaySeconds in environments/{env_name}.yaml",
                    delay.div_ceil(60)
                )),
            ),
        }
    }
}

/// Checks every delayed finalize job of `root/.gitlab-ci.yml` against the environments,
/// those of the deploy component it includes too.
pub fn check(root: &Path, environments: &[Environment]) -> Vec<Diagnostic> {
    let file = root.join(PIPELINE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Vec::new();
    };
    let arc: Arc<Path> = Arc::from(crate::env::diagnostic::display_path(&file).as_path());
    let node = match yaml::parse(&arc, &text) {
        Ok(Some(node)) => node,
        Ok(None) => return Vec::new(),
        Err(diagnostic) => {
            return vec![Diagnostic::warning(
                diagnostic.span,
                "",
                format!(
                    "cannot read the pipeline to check its finalize jobs against scaleDownDelaySeconds: {}",
                    diagnostic.message
                ),
            )];
        }
    };
    let pipeline = node.to_json();
    let Some(jobs) = pipeline.as_object() else {
        return Vec::new();
    };
    let text_map = |value: Option<&Json>| -> BTreeMap<String, String> {
        value
            .and_then(Json::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let text = match v {
                            Json::String(s) => s.clone(),
                            Json::Object(o) => o.get("value")?.as_str()?.to_owned(),
                            other => other.to_string(),
                        };
                        Some((k.clone(), text))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let global = text_map(jobs.get("variables"));
    let mut out = Vec::new();
    check_includes(&node, &pipeline, environments, &mut out);
    for name in jobs.keys() {
        if name.starts_with('.') || KEYWORDS.contains(&name.as_str()) {
            continue;
        }
        let Some(script) = resolved(jobs, name, "script") else {
            continue;
        };
        let lines: Vec<&str> = match script {
            Json::Array(lines) => lines.iter().filter_map(Json::as_str).collect(),
            Json::String(line) => vec![line.as_str()],
            _ => continue,
        };
        let Some(line) = lines
            .iter()
            .find(|l| l.contains("infra-gen") && l.contains(" finalize"))
        else {
            continue;
        };
        let mut variables = global.clone();
        variables.extend(text_map(resolved(jobs, name, "variables")));
        let Some(env_name) = env_of(line, &variables) else {
            continue;
        };
        let Some(env) = environments.iter().find(|e| e.name == env_name) else {
            continue;
        };
        let Some((workload, delay)) = longest_delay(env) else {
            continue;
        };
        let when = resolved(jobs, name, "when").and_then(Json::as_str);
        let start_in = resolved(jobs, name, "start_in").and_then(Json::as_str);
        let job_path = KeyPath::default().key(name);
        let hint = format!(
            "make the job `when: delayed` with `start_in: {} minutes` (or more), or lower rollout.scaleDownDelaySeconds in environments/{env_name}.yaml",
            delay.div_ceil(60)
        );
        match (when, start_in.and_then(gitlab_seconds)) {
            (Some("delayed"), Some(seconds)) if seconds < delay => {
                let path = job_path.key("start_in");
                out.push(
                    Diagnostic::error(
                        Some(node.span_for(&path)),
                        path.to_string(),
                        format!(
                            "{name} starts {:?} ({seconds} s) after the deploy, before the {delay} s scale-down delay of workload {workload} has passed: it would scale nothing down, and the previous slot would keep running until a later finalize or apply",
                            start_in.unwrap_or_default()
                        ),
                    )
                    .with_hint(hint),
                );
            }
            (Some("delayed"), Some(_)) => {}
            (Some("manual"), _) => {}
            _ => {
                let path = job_path.key("when");
                out.push(
                    Diagnostic::warning(
                        Some(node.span_for(&job_path)),
                        path.to_string(),
                        format!(
                            "{name} runs `infra-gen finalize --env {env_name}` without a delay: right after the deploy nothing is due yet (scaleDownDelaySeconds {delay} of workload {workload})"
                        ),
                    )
                    .with_hint(hint),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_durations_are_read_as_gitlab_reads_them() {
        assert_eq!(gitlab_seconds("11 minutes"), Some(660));
        assert_eq!(gitlab_seconds("1 hour 30 min"), Some(5400));
        assert_eq!(gitlab_seconds("90 seconds"), Some(90));
        assert_eq!(gitlab_seconds("2d"), Some(172_800));
        assert_eq!(gitlab_seconds("soon"), None);
    }

    #[test]
    fn the_environment_comes_from_the_command_line_or_its_variables() {
        let vars = BTreeMap::from([("DEPLOY_ENV".to_owned(), "production".to_owned())]);
        assert_eq!(
            env_of("dist/infra-gen finalize --env staging", &vars).as_deref(),
            Some("staging")
        );
        assert_eq!(
            env_of("infra-gen finalize --env \"$DEPLOY_ENV\"", &vars).as_deref(),
            Some("production")
        );
        assert_eq!(
            env_of("infra-gen finalize --env=${DEPLOY_ENV}", &vars).as_deref(),
            Some("production")
        );
    }
}
