//! Elastic Load Balancing (ELBv2): what the load balancer itself says, as opposed to the
//! Kubernetes objects the AWS Load Balancer Controller reconciles later and separately —
//! the health of a target group's targets, its deregistration delay, and the weights of the
//! listener rule a host and path reach. Read-only: `elasticloadbalancing:Describe*`.
//!
//! Credentials and region come from the usual AWS chain, as for EKS; `AWS_ENDPOINT_URL`
//! points it elsewhere (moto in tests).

use aws_config::BehaviorVersion;
use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::error::DisplayErrorContext;
use aws_sdk_elasticloadbalancingv2::types::{Action, RuleCondition, TargetDescription};

/// Why an ELBv2 call failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "ELBv2 {operation} ({what}) failed: {message}; the CI role needs read-only elasticloadbalancing:Describe* (or pass --no-verify-lb)"
)]
pub struct ElbError {
    /// The operation.
    pub operation: &'static str,
    /// What it was about.
    pub what: String,
    /// What AWS said.
    pub message: String,
}

/// One target of a target group, as DescribeTargetHealth reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The pod IP (IP targets).
    pub id: String,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`.
    pub state: String,
    /// e.g. `Elb.RegistrationInProgress`.
    pub reason: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.id, self.state)?;
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}

/// The forward action of the listener rule a host and path reach: (target group, weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The rule's ARN.
    pub rule: String,
    /// Target groups and their weights.
    pub groups: Vec<(String, i32)>,
}

/// An ELBv2 client of one region.
#[derive(Clone)]
pub struct Elb {
    client: Client,
    /// Load balancer ARNs by DNS name or by target group ARN, found once per run: each poll
    /// would otherwise spend the Describe quota the controller shares.
    balancers: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

fn error(operation: &'static str, what: &str, e: impl std::fmt::Display) -> ElbError {
    ElbError {
        operation,
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// The `path-pattern` the AWS Load Balancer Controller writes for a `Prefix` path.
pub fn path_patterns(path: &str) -> Vec<String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        vec!["/*".to_owned()]
    } else {
        vec![trimmed.to_owned(), format!("{trimmed}/*")]
    }
}

fn condition_values(condition: &RuleCondition) -> Vec<String> {
    let mut values: Vec<String> = condition.values().to_vec();
    if let Some(host) = condition.host_header_config() {
        values.extend(host.values().iter().cloned());
    }
    if let Some(path) = condition.path_pattern_config() {
        values.extend(path.values().iter().cloned());
    }
    values
}

fn forward_of(action: &Action) -> Option<Vec<(String, i32)>> {
    if action.r#type().map(|t| t.as_str()) != Some("forward") {
        return None;
    }
    if let Some(config) = action.forward_config()
        && !config.target_groups().is_empty()
    {
        return Some(
            config
                .target_groups()
                .iter()
                .map(|g| {
                    (
                        g.target_group_arn().unwrap_or_default().to_owned(),
                        g.weight().unwrap_or(1),
                    )
                })
                .collect(),
        );
    }
    action
        .target_group_arn()
        .map(|arn| vec![(arn.to_owned(), 1)])
}

impl Elb {
    /// An ELBv2 client made elsewhere (an endpoint of its own, as moto's in tests).
    pub fn with_client(client: Client) -> Elb {
        Elb {
            client,
            balancers: Default::default(),
        }
    }

    /// A client for `region`. Throttled calls are retried with exponential back-off (up to
    /// 10 attempts, 20 s apart at most): the Describe quota is shared with the AWS Load
    /// Balancer Controller and every other tool of the account.
    pub async fn connect(region: &str) -> Elb {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(10)
                    .with_initial_backoff(std::time::Duration::from_millis(500))
                    .with_max_backoff(std::time::Duration::from_secs(20)),
            )
            .load()
            .await;
        Elb {
            client: Client::new(&config),
            balancers: Default::default(),
        }
    }

    /// Every target of a target group (draining ones included).
    pub async fn targets(&self, group: &str) -> Result<Vec<Target>, ElbError> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(group)
            .send()
            .await
            .map_err(|e| error("DescribeTargetHealth", group, DisplayErrorContext(e)))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| Target {
                id: d
                    .target()
                    .and_then(TargetDescription::id)
                    .unwrap_or_default()
                    .to_owned(),
                state: d
                    .target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                reason: d
                    .target_health()
                    .and_then(|h| h.reason())
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// The group's deregistration delay, seconds (AWS default 300).
    pub async fn deregistration_delay(&self, group: &str) -> Result<u64, ElbError> {
        let out = self
            .client
            .describe_target_group_attributes()
            .target_group_arn(group)
            .send()
            .await
            .map_err(|e| {
                error(
                    "DescribeTargetGroupAttributes",
                    group,
                    DisplayErrorContext(e),
                )
            })?;
        Ok(out
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok())
            .unwrap_or(300))
    }

    fn cached(&self, key: &str) -> Option<String> {
        self.balancers.lock().ok().and_then(|b| b.get(key).cloned())
    }

    fn remember(&self, key: String, arn: &str) {
        if let Ok(mut known) = self.balancers.lock() {
            known.insert(key, arn.to_owned());
        }
    }

    /// The ARN of the load balancer `dns_name`: from one of its target groups (`groups`, the
    /// controller's TargetGroupBindings name them) with a single DescribeTargetGroups, else
    /// read through every page of the region's load balancers; once per run either way.
    /// `None` when it does not exist (yet).
    async fn balancer_arn(
        &self,
        dns_name: &str,
        groups: &[String],
    ) -> Result<Option<String>, ElbError> {
        let key = dns_name.to_ascii_lowercase();
        if let Some(arn) = self.cached(&key) {
            return Ok(Some(arn));
        }
        for group in groups {
            if let Some(arn) = self.cached(group) {
                return Ok(Some(arn));
            }
            let found = self
                .client
                .describe_target_groups()
                .target_group_arns(group)
                .send()
                .await
                .map_err(|e| error("DescribeTargetGroups", group, DisplayErrorContext(e)))?;
            if let Some(arn) = found
                .target_groups()
                .first()
                .and_then(|g| g.load_balancer_arns().first())
            {
                self.remember(group.clone(), arn);
                return Ok(Some(arn.clone()));
            }
        }
        let mut pages = self
            .client
            .describe_load_balancers()
            .into_paginator()
            .items()
            .send();
        while let Some(balancer) = pages.next().await {
            let balancer = balancer
                .map_err(|e| error("DescribeLoadBalancers", dns_name, DisplayErrorContext(e)))?;
            if balancer
                .dns_name()
                .is_some_and(|d| d.eq_ignore_ascii_case(dns_name))
            {
                let arn = balancer.load_balancer_arn().unwrap_or_default().to_owned();
                self.remember(key, &arn);
                return Ok(Some(arn));
            }
        }
        Ok(None)
    }

    /// The listener rules of the load balancer `dns_name` that match `host` and the
    /// path-pattern of `path`, lowest priority number (evaluated first) first; `None` when
    /// the load balancer does not exist (yet).
    async fn rules_for(
        &self,
        dns_name: &str,
        groups: &[String],
        host: &str,
        path: &str,
    ) -> Result<Option<Vec<HostPathRule>>, ElbError> {
        let Some(arn) = self.balancer_arn(dns_name, groups).await? else {
            return Ok(None);
        };
        let mut pages = self
            .client
            .describe_listeners()
            .load_balancer_arn(&arn)
            .into_paginator()
            .items()
            .send();
        let mut listeners = Vec::new();
        while let Some(listener) = pages.next().await {
            listeners.push(
                listener.map_err(|e| error("DescribeListeners", &arn, DisplayErrorContext(e)))?,
            );
        }
        let patterns = path_patterns(path);
        let mut out = Vec::new();
        for listener in &listeners {
            let listener_arn = listener.listener_arn().unwrap_or_default();
            let mut pages = self
                .client
                .describe_rules()
                .listener_arn(listener_arn)
                .into_paginator()
                .items()
                .send();
            let mut rules = Vec::new();
            while let Some(rule) = pages.next().await {
                rules.push(
                    rule.map_err(|e| error("DescribeRules", listener_arn, DisplayErrorContext(e)))?,
                );
            }
            for rule in &rules {
                let field = |name: &str| {
                    rule.conditions()
                        .iter()
                        .filter(|c| c.field() == Some(name))
                        .flat_map(condition_values)
                        .collect::<Vec<_>>()
                };
                let hosts = field("host-header");
                let paths = field("path-pattern");
                let host_ok = hosts.iter().any(|h| h.eq_ignore_ascii_case(host));
                let path_ok = patterns.iter().any(|p| paths.contains(p));
                if !(host_ok && path_ok) {
                    continue;
                }
                let header = rule
                    .conditions()
                    .iter()
                    .find(|c| c.field() == Some("http-header"))
                    .and_then(|c| c.http_header_config())
                    .map(|h| {
                        (
                            h.http_header_name().unwrap_or_default().to_owned(),
                            h.values().to_vec(),
                        )
                    });
                let only_host_and_path = rule
                    .conditions()
                    .iter()
                    .all(|c| matches!(c.field(), Some("host-header" | "path-pattern")));
                let Some(groups) = rule.actions().iter().find_map(forward_of) else {
                    continue;
                };
                out.push(HostPathRule {
                    priority: rule
                        .priority()
                        .and_then(|p| p.parse::<i64>().ok())
                        .unwrap_or(i64::MAX),
                    header,
                    only_host_and_path,
                    forward: Forward {
                        rule: rule.rule_arn().unwrap_or_default().to_owned(),
                        groups,
                    },
                });
            }
        }
        out.sort_by_key(|r| r.priority);
        Ok(Some(out))
    }

    /// The forward action of the listener rule of the load balancer `dns_name` every request
    /// for `host` and `path` reaches (host and path conditions only); `None` when the load
    /// balancer or such a rule does not exist (yet).
    pub async fn forward_for(
        &self,
        dns_name: &str,
        groups: &[String],
        host: &str,
        path: &str,
    ) -> Result<Option<Forward>, ElbError> {
        Ok(self
            .rules_for(dns_name, groups, host, path)
            .await?
            .and_then(|rules| {
                rules
                    .into_iter()
                    .find(|r| r.only_host_and_path)
                    .map(|r| r.forward)
            }))
    }

    /// The header rules for `host` and `path` (a grey release), each with whether the ALB
    /// evaluates it before the host/path rule every request reaches; `None` when the load
    /// balancer does not exist (yet).
    pub async fn header_rules(
        &self,
        dns_name: &str,
        groups: &[String],
        host: &str,
        path: &str,
    ) -> Result<Option<Vec<HeaderRule>>, ElbError> {
        let Some(rules) = self.rules_for(dns_name, groups, host, path).await? else {
            return Ok(None);
        };
        let main = rules
            .iter()
            .find(|r| r.only_host_and_path)
            .map_or(i64::MAX, |r| r.priority);
        Ok(Some(
            rules
                .into_iter()
                .filter_map(|r| {
                    let (header, values) = r.header?;
                    Some(HeaderRule {
                        header,
                        values,
                        before_main: r.priority < main,
                        forward: r.forward,
                    })
                })
                .collect(),
        ))
    }
}

/// A listener rule matching a host and path.
#[derive(Debug, Clone)]
struct HostPathRule {
    priority: i64,
    header: Option<(String, Vec<String>)>,
    only_host_and_path: bool,
    forward: Forward,
}

/// A listener rule that also matches a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    /// The header name.
    pub header: String,
    /// The values it matches.
    pub values: Vec<String>,
    /// Whether it is evaluated before the host/path rule every request reaches.
    pub before_main: bool,
    /// Where it forwards.
    pub forward: Forward,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_paths_become_the_controller_s_path_patterns() {
        assert_eq!(path_patterns("/"), ["/*"]);
        assert_eq!(path_patterns("/api"), ["/api", "/api/*"]);
        assert_eq!(path_patterns("/api/"), ["/api", "/api/*"]);
    }
}
