//! EKS: the bearer token against the published algorithm (a presigned STS
//! GetCallerIdentity URL bound to the cluster by the signed `x-k8s-aws-id` header), the
//! `eks token` / `eks kubeconfig` commands, and the Fargate preflight — AWS emulated by moto
//! (`MOTO_ENDPOINT`, started by `./scripts/test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of the support code
mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use infra_gen::eks;
use support::harness::Harness;

fn moto() -> String {
    std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT is not set: run ./scripts/test (it starts moto), or start `moto_server` and set it")
}

/// The presigned URL inside the ExecCredential a successful `eks token` run printed.
fn decode_exec_credential(output: &std::process::Output) -> (String, HashMap<String, String>) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let credential: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    decode(credential["status"]["token"].as_str().unwrap())
}

fn decode(token: &str) -> (String, HashMap<String, String>) {
    let encoded = token
        .strip_prefix(eks::TOKEN_PREFIX)
        .expect("k8s-aws-v1. prefix");
    assert!(!encoded.contains('='), "unpadded base64url");
    let url = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    let (base, query) = url.split_once('?').unwrap();
    let params = query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            let v = v
                .replace("%2F", "/")
                .replace("%3B", ";")
                .replace("%3D", "=");
            (k.to_owned(), v)
        })
        .collect();
    (base.to_owned(), params)
}

#[test]
fn the_token_is_a_presigned_get_caller_identity_bound_to_the_cluster() {
    let credentials = aws_credential_types::Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG",
        Some("session-token".into()),
        None,
        "test",
    );
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let token =
        eks::presigned_token("games-prod", "ap-northeast-1", credentials.clone(), at).unwrap();
    let (base, params) = decode(&token);
    assert_eq!(base, "https://sts.ap-northeast-1.amazonaws.com/");
    assert_eq!(params["Action"], "GetCallerIdentity");
    assert_eq!(params["Version"], "2011-06-15");
    assert_eq!(params["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    assert_eq!(
        params["X-Amz-Credential"],
        "AKIDEXAMPLE/20261118/ap-northeast-1/sts/aws4_request"
    );
    assert_eq!(params["X-Amz-Date"], "20261118T110640Z");
    assert_eq!(params["X-Amz-Expires"], "60");
    assert_eq!(params["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
    assert_eq!(params["X-Amz-Security-Token"], "session-token");
    let signature = &params["X-Amz-Signature"];
    assert!(
        signature.len() == 64 && signature.chars().all(|c| c.is_ascii_hexdigit()),
        "{signature}"
    );

    // The signature covers the cluster name: a token for one cluster is useless for another.
    let other =
        eks::presigned_token("games-staging", "ap-northeast-1", credentials.clone(), at).unwrap();
    assert_ne!(decode(&other).1["X-Amz-Signature"], *signature);
    let again = eks::presigned_token("games-prod", "ap-northeast-1", credentials, at).unwrap();
    assert_eq!(again, token, "deterministic for the same inputs");
}

#[tokio::test]
async fn eks_token_prints_an_exec_credential_valid_for_fourteen_minutes() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .args([
            "eks",
            "token",
            "--cluster",
            "games-prod",
            "--region",
            "ap-northeast-1",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let credential: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(credential["kind"], "ExecCredential");
    assert_eq!(
        credential["apiVersion"],
        "client.authentication.k8s.io/v1beta1"
    );
    let (_, params) = decode(credential["status"]["token"].as_str().unwrap());
    assert!(params["X-Amz-Credential"].starts_with("AKIDEXAMPLE/"));
    let text = credential["status"]["expirationTimestamp"]
        .as_str()
        .unwrap();
    assert!(text.ends_with('Z') && !text.contains('.'), "a Time: {text}");
    let expires: k8s_openapi::jiff::Timestamp = text.parse().unwrap();
    let left = expires.duration_since(k8s_openapi::jiff::Timestamp::now());
    assert!(
        left > k8s_openapi::jiff::SignedDuration::from_mins(13)
            && left <= k8s_openapi::jiff::SignedDuration::from_mins(14),
        "{left:?}"
    );
}

async fn eks_client() -> aws_sdk_eks::Client {
    eks_client_in("us-east-1").await
}

async fn eks_client_in(region: &str) -> aws_sdk_eks::Client {
    let config = aws_sdk_eks::Config::builder()
        .behavior_version(aws_sdk_eks::config::BehaviorVersion::latest())
        .region(aws_sdk_eks::config::Region::new(region.to_owned()))
        .endpoint_url(moto())
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .build();
    aws_sdk_eks::Client::from_conf(config)
}

async fn create_cluster(name: &str) -> String {
    create_cluster_in(name, "us-east-1").await
}

/// A cluster in moto's `region`; its endpoint.
async fn create_cluster_in(name: &str, region: &str) -> String {
    let client = eks_client_in(region).await;
    let vpc = aws_sdk_eks::types::VpcConfigRequest::builder()
        .subnet_ids("subnet-1")
        .build();
    let partition = infra_gen::env::rules::partition(region);
    let out = client
        .create_cluster()
        .name(name)
        .role_arn(format!("arn:{partition}:iam::123456789012:role/eks"))
        .resources_vpc_config(vpc)
        .send()
        .await
        .unwrap();
    out.cluster.and_then(|c| c.endpoint).unwrap_or_default()
}

async fn create_profile(cluster: &str, profile: &str, namespace: &str) {
    let selector = aws_sdk_eks::types::FargateProfileSelector::builder()
        .namespace(namespace)
        .build();
    eks_client()
        .await
        .create_fargate_profile()
        .cluster_name(cluster)
        .fargate_profile_name(profile)
        .pod_execution_role_arn("arn:aws:iam::123456789012:role/fargate")
        .selectors(selector)
        .send()
        .await
        .unwrap();
}

fn aws_env() -> Vec<(&'static str, String)> {
    aws_env_in("us-east-1")
}

fn aws_env_in(region: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", region.into()),
    ]
}

/// Environment `prod` of the harness, on EKS cluster `cluster` of `region`, rendered.
async fn env_on_cluster(h: &Harness, cluster: &str, region: &str) {
    h.write_env("prod", &h.web(&h.images.v1, "    replicas: 2\n"))
        .await;
    let file = h.root().join("environments/prod.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "cluster: {name: e2e, region: us-east-1, compute: ec2}",
        &format!("cluster: {{name: {cluster}, region: {region}, compute: ec2}}"),
    );
    std::fs::write(&file, text).unwrap();
    assert!(h.run(&["render"], &[]).await.ok);
}

/// `command --env prod` with the harness's kubeconfig and the cluster identity check on.
async fn with_identity_check(
    h: &Harness,
    command: &str,
    env: &[(&str, String)],
) -> support::harness::Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let kubeconfig = h.kubeconfig.to_string_lossy().to_string();
    h.run(
        &[
            command,
            "--env",
            "prod",
            "--kubeconfig",
            &kubeconfig,
            "--check-cluster-identity",
        ],
        &env,
    )
    .await
}

/// `infra-gen eks kubeconfig` for a cluster of moto's `region`, read back.
async fn eks_kubeconfig(cluster: &str, region: &str) -> kube::config::Kubeconfig {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kubeconfig");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .args([
            "eks",
            "kubeconfig",
            "--cluster",
            cluster,
            "--region",
            region,
            "-o",
        ])
        .arg(&file)
        .envs(aws_env_in(region))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    kube::config::Kubeconfig::read_from(&file).unwrap()
}

#[tokio::test]
async fn eks_kubeconfig_points_kubectl_at_the_cluster_through_the_token_plugin() {
    let name = format!("kc-{}", std::process::id());
    let endpoint = create_cluster(&name).await;
    assert!(!endpoint.is_empty());
    let config = eks_kubeconfig(&name, "us-east-1").await;
    assert_eq!(
        config.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .server
            .as_deref(),
        Some(endpoint.as_str())
    );
    let exec = config.auth_infos[0]
        .auth_info
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap();
    assert!(exec.command.as_deref().unwrap().ends_with("infra-gen"));
    assert_eq!(
        exec.args.as_deref().unwrap(),
        [
            "eks",
            "token",
            "--cluster",
            name.as_str(),
            "--region",
            "us-east-1"
        ]
    );

    let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .args([
            "eks",
            "kubeconfig",
            "--cluster",
            "no-such-cluster",
            "--region",
            "us-east-1",
        ])
        .envs(aws_env())
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("EKS DescribeCluster for cluster no-such-cluster in us-east-1 failed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn on_fargate_apply_refuses_a_namespace_no_profile_selects() {
    let h = Harness::start().await;
    let cluster = format!("fargate-{}", h.id);
    create_cluster(&cluster).await;
    create_profile(&cluster, "elsewhere", "other-*").await;
    let workloads = h.web(
        &h.images.v1,
        "    replicas: 2\n    rollout: {strategy: blue-green}\n",
    );
    h.write_env("prod", &workloads).await;
    let file = h.root().join("environments/prod.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "cluster: {name: e2e, region: us-east-1, compute: ec2}",
        &format!("cluster: {{name: {cluster}, region: us-east-1, compute: fargate}}"),
    );
    std::fs::write(&file, text).unwrap();
    assert!(h.run(&["render"], &[]).await.ok);

    let env: Vec<(&str, String)> = aws_env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let kubeconfig = h.kubeconfig.to_string_lossy().to_string();
    let run = h
        .run(
            &["apply", "--env", "prod", "--kubeconfig", &kubeconfig],
            &env_refs,
        )
        .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains(&format!(
            "no Fargate profile of cluster {cluster} selects namespace {}",
            h.namespace()
        )),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("elsewhere (other-*)"),
        "the existing profiles are listed: {}",
        run.all()
    );
    assert!(
        run.stderr.contains("aws eks create-fargate-profile"),
        "{}",
        run.all()
    );
    assert!(
        h.get("Deployment", "web-blue").await.is_none(),
        "nothing was deployed"
    );

    create_profile(&cluster, "e2e", "e2e-*").await;
    let run = h
        .run(
            &["apply", "--env", "prod", "--kubeconfig", &kubeconfig],
            &env_refs,
        )
        .await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
}

#[test]
fn the_token_is_presigned_for_the_sts_host_of_the_regions_partition() {
    assert_eq!(
        eks::sts_host("ap-northeast-1").unwrap(),
        "sts.ap-northeast-1.amazonaws.com"
    );
    assert_eq!(
        eks::sts_host("cn-north-1").unwrap(),
        "sts.cn-north-1.amazonaws.com.cn"
    );
    assert_eq!(
        eks::sts_host("cn-northwest-1").unwrap(),
        "sts.cn-northwest-1.amazonaws.com.cn"
    );
    assert_eq!(
        eks::sts_host("us-gov-west-1").unwrap(),
        "sts.us-gov-west-1.amazonaws.com"
    );
    let credentials =
        aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let token = eks::presigned_token("games-cn", "cn-north-1", credentials, at).unwrap();
    let (base, params) = decode(&token);
    assert_eq!(base, "https://sts.cn-north-1.amazonaws.com.cn/");
    assert_eq!(
        params["X-Amz-Credential"],
        "AKIDEXAMPLE/20261118/cn-north-1/sts/aws4_request"
    );
}

#[tokio::test]
async fn eks_token_for_a_china_region_is_presigned_for_the_china_sts_host() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .args([
            "eks",
            "token",
            "--cluster",
            "games-cn",
            "--region",
            "cn-north-1",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    let (base, params) = decode_exec_credential(&output);
    assert_eq!(base, "https://sts.cn-north-1.amazonaws.com.cn/");
    assert!(params["X-Amz-Credential"].ends_with("/cn-north-1/sts/aws4_request"));
}

#[tokio::test]
async fn a_kubeconfig_of_another_cluster_is_refused_before_anything_is_written() {
    let h = Harness::start().await;
    let cluster = format!("identity-{}", h.id);
    let endpoint = create_cluster(&cluster).await;
    env_on_cluster(&h, &cluster, "us-east-1").await;
    h.clear_requests();

    // The test cluster is not the EKS cluster the file names: refused, both named.
    let run = with_identity_check(&h, "apply", &aws_env()).await;
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "but the environment file names EKS cluster {cluster} (us-east-1) at {endpoint}: refusing to touch another cluster"
        )),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("--any-cluster"),
        "the way out is named: {}",
        run.all()
    );
    assert!(
        h.requests().iter().all(|r| r.method == "GET"),
        "nothing written: {:?}",
        h.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert!(h.get("Deployment", "web").await.is_none());

    // A cluster EKS does not know: it cannot be confirmed, so it is refused too.
    env_on_cluster(&h, "no-such-cluster", "us-east-1").await;
    let run = with_identity_check(&h, "status", &aws_env()).await;
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stderr.contains("cannot confirm that"), "{}", run.all());

    // The override is said loudly, and then works.
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("WARNING: --any-cluster: not checking that kubeconfig"),
        "{}",
        run.all()
    );
}

/// A cluster in China on moto: `eks kubeconfig` reaches it through DescribeCluster of
/// cn-north-1, its token plugin presigns for the China STS host, and a kubeconfig of another
/// cluster is refused against the China cluster's endpoint.
#[tokio::test]
async fn a_cluster_in_china_on_moto_is_reached_checked_and_signed_for_in_its_partition() {
    let h = Harness::start().await;
    let cluster = format!("cn-{}", h.id);
    let endpoint = create_cluster_in(&cluster, "cn-north-1").await;
    assert!(!endpoint.is_empty());
    let env = aws_env_in("cn-north-1");

    // kubeconfig: the China cluster's endpoint, and a token plugin for its region.
    let config = eks_kubeconfig(&cluster, "cn-north-1").await;
    let server = config.clusters[0].cluster.as_ref().unwrap().server.clone();
    assert_eq!(server.as_deref(), Some(endpoint.as_str()));
    let exec = config.auth_infos[0]
        .auth_info
        .as_ref()
        .unwrap()
        .exec
        .clone()
        .unwrap();
    let token = tokio::process::Command::new(exec.command.unwrap())
        .args(exec.args.unwrap())
        .envs(env.clone())
        .output()
        .await
        .unwrap();
    let (base, params) = decode_exec_credential(&token);
    assert_eq!(base, "https://sts.cn-north-1.amazonaws.com.cn/");
    assert_eq!(params["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
    assert!(params["X-Amz-Credential"].ends_with("/cn-north-1/sts/aws4_request"));

    // An environment in cn-north-1, a kubeconfig of another cluster: refused, both named.
    env_on_cluster(&h, &cluster, "cn-north-1").await;
    let run = with_identity_check(&h, "status", &env).await;
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "but the environment file names EKS cluster {cluster} (cn-north-1) at {endpoint}"
        )),
        "{}",
        run.all()
    );
}
