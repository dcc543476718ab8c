//! The rehearsal's load, through a data plane that follows what the load-balancer stand-in
//! configured in moto: check-ins at a fixed rate through an ALB (`--alb`), or long-lived
//! connections and a new one every second through an NLB (`--nlb`), until the stop file
//! appears; then prints what the load saw, as JSON.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// moto's endpoint.
    #[arg(long)]
    moto: String,
    /// The DNS name of an ALB (the Ingress's status hostname): HTTP check-ins.
    #[arg(long, conflicts_with = "nlb", required_unless_present = "nlb")]
    alb: Option<String>,
    /// The DNS name of an NLB (the Service's status hostname): TCP connections.
    #[arg(long)]
    nlb: Option<String>,
    /// The Host header check-ins carry (the Ingress's host).
    #[arg(long, default_value = "")]
    host: String,
    /// Check-ins a second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// A header (`NAME=VALUE`) every `--header-every`-th check-in carries: a grey release's.
    #[arg(long, requires = "alb")]
    header: Option<String>,
    /// Which check-ins carry `--header`: every n-th.
    #[arg(long, default_value_t = 5)]
    header_every: u64,
    /// Connections held through the NLB from the start to the end.
    #[arg(long, default_value_t = 10)]
    held: usize,
    /// Load stops when this file exists.
    #[arg(long)]
    stop_file: PathBuf,
}

async fn wait_until(what: &str, mut ready: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    // The first release's targets pass their health checks before any player arrives.
    let waiting = std::time::Instant::now();
    while !ready().await {
        anyhow::ensure!(
            waiting.elapsed() < Duration::from_secs(180),
            "{what} had no healthy target within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "rehearsal-load: {what} serves after {:.1} s; load started",
        waiting.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("testbed=info")
        .init();
    let args = Args::parse();
    let elb = testbed::lb::aws::client(&args.moto).await;
    let stop_file = args.stop_file.clone();
    let stop = async move {
        while !stop_file.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    use testbed::dataplane;
    if let Some(nlb) = args.nlb {
        // The data plane starts once there is something to serve: its first view is then
        // current (started before, its first requests would go by a view from before).
        wait_until(&nlb, async || {
            dataplane::nlb::healthy_targets(&elb, &nlb)
                .await
                .is_ok_and(|t| !t.is_empty())
        })
        .await?;
        let address = dataplane::nlb::serve(elb.clone(), nlb.clone()).await?;
        let figures = dataplane::nlb::load(address, args.held, stop).await;
        println!("{}", serde_json::to_string(&figures)?);
    } else if let Some(alb) = args.alb {
        wait_until(&alb, async || {
            dataplane::serving(&elb, &alb, &args.host, "/v1/checkin").await
        })
        .await?;
        let address =
            dataplane::serve_alb(elb.clone(), alb.clone(), "127.0.0.1:0".parse()?).await?;
        let marked = match args.header.as_deref().map(|h| h.split_once('=')) {
            None => None,
            Some(Some((name, value))) => Some(dataplane::MarkedShare {
                name: name.to_owned(),
                value: value.to_owned(),
                every: args.header_every,
            }),
            Some(None) => anyhow::bail!("--header wants NAME=VALUE, e.g. X-Canary=qa"),
        };
        let figures = dataplane::load(
            format!("http://{address}/v1/checkin"),
            args.host,
            args.rate,
            marked,
            stop,
        )
        .await;
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}
