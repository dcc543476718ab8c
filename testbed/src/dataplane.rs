//! The data plane of the load balancer the stand-in configures in moto, for the rehearsal:
//! an HTTP proxy that routes each request as that ALB would, and a load generator that
//! counts what a player would notice.
//!
//! Its rules, beside the real ALB's:
//! - listener rules are evaluated in priority order, then the default action; conditions:
//!   host header and path pattern (`*` and `?` wildcards) and HTTP header values, as ELBv2
//!   holds them (so a rule the controller has not changed yet still routes the old way);
//! - a forward picks its target group by weight, then a `healthy` target of that group
//!   round-robin, at the port registered for it;
//! - a group with no healthy target answers 503 (a real ALB fails open to all of the
//!   group's targets when none is healthy; here that counts as a failure, since infra-gen
//!   must never give weight to such a group);
//! - `draining` and deregistered targets get no new requests; requests already sent to them
//!   finish (the proxy holds no connection across requests, so nothing else is kept);
//! - what it knows is at most a quarter of a second old (it polls moto).

pub mod nlb;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2 as elbv2;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One listener rule as ELBv2 holds it.
#[derive(Debug, Clone, Default)]
struct Rule {
    hosts: Vec<String>,
    paths: Vec<String>,
    headers: Vec<(String, Vec<String>)>,
    /// (target group ARN, weight).
    forward: Vec<(String, i32)>,
}

/// What the proxy routes by: the rules in order (the default last) and each group's healthy
/// targets as (address, port).
#[derive(Debug, Clone, Default)]
pub struct View {
    rules: Vec<Rule>,
    healthy: HashMap<String, Vec<String>>,
}

/// `*` any run of characters, `?` any one; case-insensitive when `fold`.
fn glob(pattern: &str, text: &str, fold: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = if fold {
        (
            pattern.to_lowercase().chars().collect(),
            text.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

impl Rule {
    fn matches(&self, host: &str, path: &str, headers: &axum::http::HeaderMap) -> bool {
        let host = host.split(':').next().unwrap_or_default();
        (self.hosts.is_empty() || self.hosts.iter().any(|h| glob(h, host, true)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| glob(p, path, false)))
            && self.headers.iter().all(|(name, values)| {
                headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| values.iter().any(|pattern| glob(pattern, v, true)))
            })
    }
}

/// The listeners of the load balancer whose DNS name is `dns_name`.
async fn listeners_of(
    elb: &elbv2::Client,
    dns_name: &str,
) -> anyhow::Result<Vec<elbv2::types::Listener>> {
    let balancers = elb.describe_load_balancers().send().await?;
    let arn = balancers
        .load_balancers()
        .iter()
        .find(|b| b.dns_name() == Some(dns_name))
        .and_then(|b| b.load_balancer_arn())
        .ok_or_else(|| anyhow::anyhow!("no load balancer named {dns_name}"))?;
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(arn)
        .send()
        .await?;
    Ok(listeners.listeners().to_vec())
}

/// The target groups an action forwards to, with their weights (a plain forward: weight 1).
fn forwards(action: &elbv2::types::Action) -> Vec<(String, i32)> {
    match action.forward_config() {
        Some(forward) => forward
            .target_groups()
            .iter()
            .filter_map(|g| Some((g.target_group_arn()?.to_owned(), g.weight().unwrap_or(1))))
            .collect(),
        None => action
            .target_group_arn()
            .map(|g| (g.to_owned(), 1))
            .into_iter()
            .collect(),
    }
}

/// What a data plane knows of its load balancer: `read` once now, then every 250 ms (a read
/// that fails keeps what was known).
async fn follow<T, F, Fut>(read: F) -> anyhow::Result<Arc<RwLock<T>>>
where
    T: Send + Sync + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
{
    let known = Arc::new(RwLock::new(read().await?));
    let poller = known.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match read().await {
                Ok(now) => *poller.write().unwrap_or_else(|e| e.into_inner()) = now,
                Err(error) => tracing::warn!(%error, "could not read the load balancer"),
            }
        }
    });
    Ok(known)
}

/// The `healthy` targets of a target group, as address:port.
async fn healthy_in(elb: &elbv2::Client, group: &str) -> anyhow::Result<Vec<String>> {
    let health = elb
        .describe_target_health()
        .target_group_arn(group)
        .send()
        .await?;
    Ok(health
        .target_health_descriptions()
        .iter()
        .filter(|d| {
            d.target_health()
                .and_then(|h| h.state())
                .map(|s| s.as_str())
                == Some("healthy")
        })
        .filter_map(|d| {
            let t = d.target()?;
            Some(format!("{}:{}", t.id()?, t.port()?))
        })
        .collect())
}

/// Reads the listener rules and target health of the load balancer named `dns_name`.
pub async fn read_view(elb: &elbv2::Client, dns_name: &str) -> anyhow::Result<View> {
    let mut view = View::default();
    for listener in listeners_of(elb, dns_name).await? {
        let Some(listener_arn) = listener.listener_arn() else {
            continue;
        };
        let rules = elb
            .describe_rules()
            .listener_arn(listener_arn)
            .send()
            .await?;
        let mut ordered: Vec<(i64, Rule)> = Vec::new();
        for rule in rules.rules() {
            let priority = match rule.priority() {
                Some("default") | None => i64::MAX,
                Some(p) => p.parse().unwrap_or(i64::MAX - 1),
            };
            let mut out = Rule::default();
            for condition in rule.conditions() {
                match condition.field() {
                    Some("host-header") => out.hosts.extend(
                        condition
                            .host_header_config()
                            .map(|c| c.values().to_vec())
                            .unwrap_or_else(|| condition.values().to_vec()),
                    ),
                    Some("path-pattern") => out.paths.extend(
                        condition
                            .path_pattern_config()
                            .map(|c| c.values().to_vec())
                            .unwrap_or_else(|| condition.values().to_vec()),
                    ),
                    Some("http-header") => {
                        if let Some(c) = condition.http_header_config() {
                            out.headers.push((
                                c.http_header_name().unwrap_or_default().to_owned(),
                                c.values().to_vec(),
                            ));
                        }
                    }
                    _ => {}
                }
            }
            out.forward.extend(rule.actions().iter().flat_map(forwards));
            ordered.push((priority, out));
        }
        ordered.sort_by_key(|(p, _)| *p);
        view.rules.extend(ordered.into_iter().map(|(_, r)| r));
    }
    let groups: Vec<String> = view
        .rules
        .iter()
        .flat_map(|r| r.forward.iter().map(|(g, _)| g.clone()))
        .collect();
    for group in groups {
        if view.healthy.contains_key(&group) {
            continue;
        }
        let targets = healthy_in(elb, &group).await?;
        view.healthy.insert(group, targets);
    }
    Ok(view)
}

struct Proxy {
    view: Arc<RwLock<View>>,
    client: reqwest::Client,
    next: AtomicUsize,
}

impl Proxy {
    /// The target (address:port) and its target group for `request`.
    fn pick(&self, request: &Request<Body>) -> Result<(String, String), &'static str> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let host = request
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let rule = view
            .rules
            .iter()
            .find(|r| r.matches(host, request.uri().path(), request.headers()))
            .ok_or("no rule matches")?;
        let total: i32 = rule.forward.iter().map(|(_, w)| (*w).max(0)).sum();
        if total == 0 {
            return Err("the rule forwards nowhere");
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Spread by weight without randomness: request n goes to the group whose share of
        // the weights covers n modulo their sum (a 10 % group gets every tenth request).
        let mut slot = i32::try_from(n % usize::try_from(total).unwrap_or(1)).unwrap_or(0);
        let group = rule
            .forward
            .iter()
            .find(|(_, w)| {
                if slot < (*w).max(0) {
                    return true;
                }
                slot -= (*w).max(0);
                false
            })
            .map(|(g, _)| g)
            .ok_or("no group")?;
        let targets = view
            .healthy
            .get(group)
            .filter(|t| !t.is_empty())
            .ok_or("no healthy target in the group the rule picked")?;
        let target = targets[n / usize::try_from(total).unwrap_or(1) % targets.len()].clone();
        Ok((target, group.clone()))
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request<Body>) -> Response {
    let (target, group) = match proxy.pick(&request) {
        Ok(picked) => picked,
        Err(why) => return (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let url = format!(
        "http://{target}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut upstream = proxy.client.request(parts.method, url).body(bytes);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let bytes = answer.bytes().await.unwrap_or_default();
            // Which target group answered: the load counts where each request went.
            (status, [(TARGET_GROUP_HEADER, group)], bytes).into_response()
        }
        // As the ALB: a target that refuses or drops the connection is a 502.
        Err(error) => {
            (StatusCode::BAD_GATEWAY, format!("target {target}: {error}")).into_response()
        }
    }
}

/// The header the proxy adds to each answer from a target: the target group's ARN (a real
/// ALB adds nothing of the kind; the rehearsal's figures need it).
pub const TARGET_GROUP_HEADER: &str = "x-rehearsal-target-group";

/// Whether a request for `host` and `path` would reach a healthy target now.
pub async fn serving(elb: &elbv2::Client, dns_name: &str, host: &str, path: &str) -> bool {
    let Ok(view) = read_view(elb, dns_name).await else {
        return false;
    };
    let headers = axum::http::HeaderMap::new();
    view.rules
        .iter()
        .find(|r| r.matches(host, path, &headers))
        .is_some_and(|rule| {
            rule.forward
                .iter()
                .filter(|(_, w)| *w > 0)
                .all(|(group, _)| view.healthy.get(group).is_some_and(|t| !t.is_empty()))
                && rule.forward.iter().any(|(_, w)| *w > 0)
        })
}

/// Starts the proxy on `listen`, following the load balancer named `dns_name` in moto.
pub async fn serve_alb(
    elb: elbv2::Client,
    dns_name: String,
    listen: std::net::SocketAddr,
) -> anyhow::Result<std::net::SocketAddr> {
    let view = follow(move || {
        let (elb, dns_name) = (elb.clone(), dns_name.clone());
        async move { read_view(&elb, &dns_name).await }
    })
    .await?;
    let proxy = Arc::new(Proxy {
        view,
        // A new connection per request: the ALB's keep-alive to a target ends when it drains.
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()?,
        next: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(address)
}

/// What the load saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Figures {
    pub sent: u64,
    pub ok: u64,
    /// Connection errors and timeouts.
    pub errors: u64,
    /// 5xx answers, by status.
    pub server_errors: HashMap<u16, u64>,
    /// Other non-2xx answers.
    pub other: u64,
    /// The longest time without a successful answer, in milliseconds.
    pub longest_gap_ms: u64,
    /// The first few failures, as seen.
    pub examples: Vec<String>,
    /// Where successful answers came from: for requests without the header (`plain`) and
    /// with it (`header`), each target group's ARN and the seconds since the load started in
    /// which it answered.
    pub groups: BTreeMap<&'static str, BTreeMap<String, BTreeSet<u64>>>,
}

impl Figures {
    pub fn failed(&self) -> u64 {
        self.errors + self.server_errors.values().sum::<u64>() + self.other
    }
}

/// A request header sent with every `every`-th check-in (a grey release's header).
#[derive(Debug, Clone)]
pub struct MarkedShare {
    pub name: String,
    pub value: String,
    pub every: u64,
}

/// Sends `POST url` with a check-in body `rate` times a second until `stop` resolves.
pub async fn load(
    url: String,
    host: String,
    rate: u32,
    marked: Option<MarkedShare>,
    stop: impl std::future::Future<Output = ()>,
) -> Figures {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            return Figures {
                examples: vec![format!("no HTTP client: {error}")],
                ..Figures::default()
            };
        }
    };
    let figures = Arc::new(std::sync::Mutex::new(Figures::default()));
    let last_ok = Arc::new(std::sync::Mutex::new(Instant::now()));
    let load_started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let mut request = client
            .post(&url)
            .header("host", &host)
            .json(&serde_json::json!({"device_id": format!("rehearsal-{n}")}));
        let kind = match &marked {
            Some(m) if n.is_multiple_of(m.every.max(1)) => {
                request = request.header(&m.name, &m.value);
                "header"
            }
            _ => "plain",
        };
        let (figures, last_ok) = (figures.clone(), last_ok.clone());
        let started = load_started;
        tasks.spawn(async move {
            enum Outcome {
                Ok(Option<String>),
                Server(u16, String),
                Other(String),
                Error(String),
            }
            let outcome = match request.send().await {
                Ok(a) if a.status().is_success() => Outcome::Ok(
                    a.headers()
                        .get(TARGET_GROUP_HEADER)
                        .and_then(|g| g.to_str().ok())
                        .map(str::to_owned),
                ),
                Ok(a) if a.status().is_server_error() => {
                    let status = a.status();
                    Outcome::Server(
                        status.as_u16(),
                        format!("{status}: {}", a.text().await.unwrap_or_default()),
                    )
                }
                Ok(a) => Outcome::Other(a.status().to_string()),
                Err(error) => Outcome::Error(error.to_string()),
            };
            let mut f = figures.lock().unwrap_or_else(|e| e.into_inner());
            f.sent += 1;
            let failure = match outcome {
                Outcome::Ok(group) => {
                    f.ok += 1;
                    if let Some(group) = group {
                        f.groups
                            .entry(kind)
                            .or_default()
                            .entry(group)
                            .or_default()
                            .insert(started.elapsed().as_secs());
                    }
                    let mut last = last_ok.lock().unwrap_or_else(|e| e.into_inner());
                    let gap = u64::try_from(last.elapsed().as_millis()).unwrap_or(u64::MAX);
                    f.longest_gap_ms = f.longest_gap_ms.max(gap);
                    *last = Instant::now();
                    None
                }
                Outcome::Server(status, text) => {
                    *f.server_errors.entry(status).or_default() += 1;
                    Some(text)
                }
                Outcome::Other(text) => {
                    f.other += 1;
                    Some(text)
                }
                Outcome::Error(text) => {
                    f.errors += 1;
                    Some(text)
                }
            };
            if let Some(failure) = failure.filter(|_| f.examples.len() < 10) {
                let at = started.elapsed().as_secs_f64();
                f.examples.push(format!("at {at:.1} s: {failure}"));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut f = figures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let since_last = last_ok.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
    f.longest_gap_ms = f
        .longest_gap_ms
        .max(u64::try_from(since_last.as_millis()).unwrap_or(u64::MAX));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(rules: Vec<Rule>, healthy: &[(&str, &[&str])]) -> Proxy {
        Proxy {
            view: Arc::new(RwLock::new(View {
                rules,
                healthy: healthy
                    .iter()
                    .map(|(g, t)| ((*g).to_owned(), t.iter().map(|t| (*t).to_owned()).collect()))
                    .collect(),
            })),
            client: reqwest::Client::new(),
            next: AtomicUsize::new(0),
        }
    }

    fn request(header: Option<(&str, &str)>) -> Request<Body> {
        let mut r = Request::builder()
            .uri("/v1/checkin")
            .header("host", "ct.example.com");
        if let Some((name, value)) = header {
            r = r.header(name, value);
        }
        r.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_header_rule_comes_first_and_weights_spread_the_rest() {
        let canary = Rule {
            hosts: vec!["ct.example.com".into()],
            paths: vec!["/*".into()],
            headers: vec![("X-Canary".into(), vec!["qa".into()])],
            forward: vec![("green".into(), 1)],
        };
        let split = Rule {
            hosts: vec!["ct.example.com".into()],
            paths: vec!["/*".into()],
            headers: vec![],
            forward: vec![("blue".into(), 90), ("green".into(), 10)],
        };
        let p = proxy(
            vec![canary, split],
            &[
                ("blue", &["10.0.0.1:8080", "10.0.0.2:8080"]),
                ("green", &["10.0.0.3:8080"]),
            ],
        );
        for _ in 0..20 {
            let (target, group) = p.pick(&request(Some(("x-canary", "QA")))).unwrap();
            assert_eq!(
                (target.as_str(), group.as_str()),
                ("10.0.0.3:8080", "green")
            );
        }
        let groups: Vec<String> = (0..1000)
            .map(|_| p.pick(&request(None)).unwrap().1)
            .collect();
        let green = groups.iter().filter(|g| *g == "green").count();
        assert!(
            (90..=110).contains(&green),
            "{green} of 1000 to the 10 % group"
        );
    }

    #[test]
    fn an_action_forwards_by_its_weights_or_to_its_one_group() {
        use elbv2::types::{Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple};
        let tuple = |arn: &str, weight| {
            TargetGroupTuple::builder()
                .target_group_arn(arn)
                .weight(weight)
                .build()
        };
        let weighted = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .target_groups(tuple("blue", 90))
                    .target_groups(tuple("green", 10))
                    .build(),
            )
            .build();
        assert_eq!(
            forwards(&weighted),
            vec![("blue".to_owned(), 90), ("green".to_owned(), 10)]
        );
        let plain = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn("blue")
            .build();
        assert_eq!(forwards(&plain), vec![("blue".to_owned(), 1)]);
    }

    #[test]
    fn a_group_without_healthy_targets_answers_no_target() {
        let rule = Rule {
            forward: vec![("blue".into(), 0), ("green".into(), 100)],
            ..Rule::default()
        };
        let p = proxy(vec![rule], &[("blue", &["10.0.0.1:8080"]), ("green", &[])]);
        assert_eq!(
            p.pick(&request(None)),
            Err("no healthy target in the group the rule picked")
        );
    }

    #[test]
    fn patterns_match_as_elbv2_conditions_do() {
        assert!(glob("/*", "/v1/checkin", false));
        assert!(glob("ct.example.com", "CT.example.com", true));
        assert!(glob("*.example.com", "a.example.com", true));
        assert!(!glob("/v1/?", "/v1/ab", false));
        assert!(glob("/v1/?", "/v1/a", false));
        assert!(!glob("/a*", "/b", false));
    }
}
