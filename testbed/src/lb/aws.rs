//! What the stand-in controller made in ELBv2 (moto), and the calls that make it.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, LoadBalancerTypeEnum, ProtocolEnum,
    TargetGroupTuple, TargetTypeEnum,
};

use super::DesiredRule;

/// (namespace, object name).
pub type Owner = (String, String);
/// A load balancer: ARN, DNS name, listener ARN by port.
type Balancer = (String, String, BTreeMap<i32, String>);

/// A listener rule the controller made: ARN, what it matches (host, path, header condition)
/// and the forward (target group, weight) it was last given.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleState {
    pub arn: String,
    pub matches: String,
    pub groups: Vec<(String, i32)>,
}

#[derive(Default)]
pub struct Aws {
    vpc: String,
    subnets: Vec<String>,
    /// (namespace, object) → (load balancer ARN, DNS name, listener ARNs by port).
    balancers: HashMap<Owner, Balancer>,
    /// (namespace, service, port) → target group ARN.
    groups: HashMap<(String, String, i32), String>,
    /// (namespace, Ingress) → its listener rules, in priority order.
    pub rules: HashMap<Owner, Vec<RuleState>>,
    next_priority: i32,
}

/// An ELBv2 client for moto.
pub async fn client(moto: &str) -> elbv2::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "testbed",
        ))
        .load()
        .await;
    elbv2::Client::new(&config)
}

/// The default VPC and its subnets, read from moto's EC2 (query API; no SDK needed).
async fn network(moto: &str) -> anyhow::Result<(String, Vec<String>)> {
    let text = reqwest::Client::new()
        .post(moto)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=DescribeSubnets&Version=2016-11-15")
        .send()
        .await
        .with_context(|| format!("ask moto at {moto} for the default VPC's subnets"))?
        .text()
        .await?;
    let values = |tag: &str| -> Vec<String> {
        text.split(&format!("<{tag}>"))
            .skip(1)
            .filter_map(|part| part.split(&format!("</{tag}>")).next())
            .map(str::to_owned)
            .collect()
    };
    let subnets = values("subnetId");
    let vpc = values("vpcId").into_iter().next().unwrap_or_default();
    anyhow::ensure!(
        !subnets.is_empty() && !vpc.is_empty(),
        "moto at {moto} has no default VPC: {text}"
    );
    Ok((vpc, subnets))
}

/// A short stable hash, for AWS names (32 characters at most).
pub fn short_hash(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

fn forward(groups: &[(String, i32)]) -> Action {
    let tuples: Vec<TargetGroupTuple> = groups
        .iter()
        .map(|(arn, weight)| {
            TargetGroupTuple::builder()
                .target_group_arn(arn)
                .weight(*weight)
                .build()
        })
        .collect();
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(
            ForwardActionConfig::builder()
                .set_target_groups(Some(tuples))
                .build(),
        )
        .build()
}

impl Aws {
    pub async fn new(moto: &str) -> anyhow::Result<Self> {
        let (vpc, subnets) = network(moto).await?;
        Ok(Self {
            vpc,
            subnets,
            next_priority: 1,
            ..Self::default()
        })
    }

    pub fn knows_group(&self, arn: &str) -> bool {
        self.groups.values().any(|g| g == arn)
    }

    pub async fn ensure_balancer(
        &mut self,
        elb: &elbv2::Client,
        namespace: &str,
        name: &str,
        network: bool,
    ) -> Option<(String, String)> {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some((arn, dns, _)) = self.balancers.get(&key) {
            return Some((arn.clone(), dns.clone()));
        }
        let lb_name = format!("k8s-{}", short_hash(&format!("{namespace}/{name}")));
        let created = elb
            .create_load_balancer()
            .name(&lb_name)
            .set_subnets(Some(self.subnets.clone()))
            .r#type(if network {
                LoadBalancerTypeEnum::Network
            } else {
                LoadBalancerTypeEnum::Application
            })
            .send()
            .await
            .ok()?;
        let balancer = created.load_balancers().first()?;
        let arn = balancer.load_balancer_arn()?.to_owned();
        let dns = balancer.dns_name()?.to_owned();
        self.balancers
            .insert(key, (arn.clone(), dns.clone(), BTreeMap::new()));
        Some((arn, dns))
    }

    pub async fn ensure_listener(
        &mut self,
        elb: &elbv2::Client,
        key: &Owner,
        port: i32,
        protocol: ProtocolEnum,
        default: Option<String>,
    ) -> Option<String> {
        let (arn, _, listeners) = self.balancers.get(key)?;
        if let Some(listener) = listeners.get(&port) {
            return Some(listener.clone());
        }
        let action = match default {
            Some(group) => Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(group)
                .build(),
            None => Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    elbv2::types::FixedResponseActionConfig::builder()
                        .status_code("404")
                        .build(),
                )
                .build(),
        };
        let created = elb
            .create_listener()
            .load_balancer_arn(arn)
            .port(port)
            .protocol(protocol)
            .default_actions(action)
            .send()
            .await
            .ok()?;
        let listener = created.listeners().first()?.listener_arn()?.to_owned();
        if let Some((_, _, listeners)) = self.balancers.get_mut(key) {
            listeners.insert(port, listener.clone());
        }
        Some(listener)
    }

    /// The target group of (Service, port), made when missing.
    pub async fn ensure_group(
        &mut self,
        elb: &elbv2::Client,
        namespace: &str,
        service: &str,
        port: i32,
        protocol: ProtocolEnum,
    ) -> Option<String> {
        let key = (namespace.to_owned(), service.to_owned(), port);
        if let Some(group) = self.groups.get(&key) {
            return Some(group.clone());
        }
        let name = format!(
            "k8s-{}",
            short_hash(&format!("{namespace}/{service}/{port}"))
        );
        let created = elb
            .create_target_group()
            .name(&name)
            .protocol(protocol)
            .port(port)
            .vpc_id(&self.vpc)
            .target_type(TargetTypeEnum::Ip)
            .send()
            .await
            .ok()?;
        let group = created
            .target_groups()
            .first()?
            .target_group_arn()?
            .to_owned();
        self.groups.insert(key, group.clone());
        Some(group)
    }

    /// Rules added or removed: the controller renumbers them; here they are made again in
    /// order (each new one gets the next priority number).
    pub async fn replace_rules(
        &mut self,
        elb: &elbv2::Client,
        key: &Owner,
        listener: &str,
        desired: Vec<DesiredRule>,
    ) {
        let existing = self.rules.get(key).cloned().unwrap_or_default();
        for rule in &existing {
            let _ = elb.delete_rule().rule_arn(&rule.arn).send().await;
        }
        let mut made = Vec::new();
        for (conditions, matches, groups) in desired {
            let priority = self.next_priority;
            self.next_priority += 1;
            if let Ok(created) = elb
                .create_rule()
                .listener_arn(listener)
                .priority(priority)
                .set_conditions(Some(conditions))
                .actions(forward(&groups))
                .send()
                .await
                && let Some(arn) = created.rules().first().and_then(|r| r.rule_arn())
            {
                made.push(RuleState {
                    arn: arn.to_owned(),
                    matches,
                    groups,
                });
            }
        }
        self.rules.insert(key.clone(), made);
    }

    /// Only the forwards changed (weights): each rule modified in place.
    pub async fn modify_forwards(
        &mut self,
        elb: &elbv2::Client,
        key: &Owner,
        desired: &[DesiredRule],
    ) {
        let Some(rules) = self.rules.get_mut(key) else {
            return;
        };
        for (rule, (_, _, groups)) in rules.iter_mut().zip(desired) {
            if rule.groups != *groups
                && elb
                    .modify_rule()
                    .rule_arn(&rule.arn)
                    .actions(forward(groups))
                    .send()
                    .await
                    .is_ok()
            {
                rule.groups = groups.clone();
            }
        }
    }
}
