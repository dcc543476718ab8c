//! `testbed`: runs the node agent, the load-balancer stand-in and the Gateway API controller
//! stand-in against a real API server (the test control plane that scripts/test starts)
//! until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use testbed::ANNOUNCEMENT;
use testbed::lb::{self, Controller};

/// The node agent and the AWS Load Balancer Controller stand-in of the test control plane.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The API server's admin kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The control plane's certificate directory: `ca.crt` (trusted by the API server for
    /// webhooks) and `webhook.crt`/`webhook.key` (the webhook's serving pair).
    #[arg(long)]
    pki: PathBuf,
    /// moto's endpoint (ELBv2, EC2); without it no load-balancer stand-in runs.
    #[arg(long)]
    moto: Option<String>,
    /// The name of the node the agent registers; none: no node agent (a real kubelet runs).
    #[arg(long)]
    node: Option<String>,
    /// A kubectl binary: pods of kubectl images run it (with --node).
    #[arg(long)]
    kubectl: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "testbed=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("read {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;

    // The Gateway API: its CRDs, and a controller that reports on routes as one does.
    testbed::gateway::install_crds(&client).await?;
    tokio::spawn(testbed::gateway::run(client.clone()));
    if let Some(moto) = &args.moto {
        install_crd(&client).await?;
        let cluster = Arc::new(lb::kube::KubeCluster::start(client.clone()).await?);
        let address = lb::webhook::serve(
            cluster.clone(),
            &args.pki.join("webhook.crt"),
            &args.pki.join("webhook.key"),
        )
        .await?;
        let ca = std::fs::read(args.pki.join("ca.crt")).context("read ca.crt")?;
        lb::webhook::register(&client, address, &ca).await?;
        let mut controller = Controller::new(moto, lb::Pace::Real).await?;
        tokio::spawn(async move {
            loop {
                controller.reconcile(cluster.as_ref()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        eprintln!("testbed: load-balancer stand-in on {moto}, pod webhook on https://{address}");
    }
    let agent = match &args.node {
        Some(name) => {
            let runner = match &args.kubectl {
                Some(binary) => Some(testbed::kubectl::Runner {
                    binary: binary.clone(),
                    server: server_of(&args.kubeconfig)?,
                    ca: args.pki.join("ca.crt"),
                    client: client.clone(),
                }),
                None => None,
            };
            Some(testbed::node::Agent::start(client.clone(), name, runner).await?)
        }
        None => None,
    };
    if let Some(name) = &args.node {
        eprintln!("testbed: node agent for node {name}");
    }
    announce(&client, &args).await?;
    println!("ready");
    let running = async move {
        match agent {
            Some(agent) => agent.run().await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = running => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    if args.moto.is_some() {
        lb::webhook::unregister(&client).await;
    }
    Ok(())
}

/// Tells tests what this cluster has: a ConfigMap `kube-system/testbed` naming the node and
/// moto's endpoint (the load-balancer stand-in's), read by infra-gen's end-to-end harness.
/// The API server's URL in the kubeconfig's current context.
fn server_of(path: &std::path::Path) -> anyhow::Result<String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    kubeconfig
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.server.clone())
        .context("the kubeconfig names no server")
}

async fn announce(client: &kube::Client, args: &Args) -> anyhow::Result<()> {
    let mut data = std::collections::BTreeMap::new();
    if let Some(moto) = &args.moto {
        data.insert("moto".to_owned(), moto.clone());
    }
    if let Some(node) = &args.node {
        data.insert("node".to_owned(), node.clone());
    }
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(ANNOUNCEMENT.into()),
            namespace: Some("kube-system".into()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .patch(
            ANNOUNCEMENT,
            &PatchParams::apply("testbed").force(),
            &Patch::Apply(&map),
        )
        .await
        .context("write kube-system/testbed")?;
    Ok(())
}

/// Installs the TargetGroupBinding CRD and waits until the API serves it.
async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    let crd: CustomResourceDefinition =
        serde_json::from_str(include_str!("lb/targetgroupbinding-crd.json"))?;
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.patch(
        "targetgroupbindings.elbv2.k8s.aws",
        &PatchParams::apply("testbed").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("install the TargetGroupBinding CRD")?;
    for _ in 0..100 {
        let crd = api.get("targetgroupbindings.elbv2.k8s.aws").await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the TargetGroupBinding CRD was not established within 10 s")
}
