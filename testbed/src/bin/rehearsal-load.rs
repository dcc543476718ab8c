//! The rehearsal's load: an ALB data plane in front of the pods (following what the
//! load-balancer stand-in configured in moto) and check-ins through it at a fixed rate until
//! the stop file appears; then prints what the load saw, as JSON.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// moto's endpoint.
    #[arg(long)]
    moto: String,
    /// The DNS name of the load balancer (the Ingress's status hostname).
    #[arg(long)]
    alb: String,
    /// The Host header requests carry (the Ingress's host).
    #[arg(long)]
    host: String,
    /// Requests per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Load stops when this file exists.
    #[arg(long)]
    stop_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("testbed=info")
        .init();
    let args = Args::parse();
    let elb = testbed::lb::aws::client(&args.moto).await;
    // The first release's targets pass their health checks before any player arrives.
    let waiting = std::time::Instant::now();
    while !testbed::dataplane::serving(&elb, &args.alb, &args.host, "/v1/checkin").await {
        if waiting.elapsed() > Duration::from_secs(180) {
            anyhow::bail!(
                "the load balancer {} had no healthy target for {} within 180 s",
                args.alb,
                args.host
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "rehearsal-load: the load balancer serves after {:.1} s; load started",
        waiting.elapsed().as_secs_f64()
    );
    let address =
        testbed::dataplane::serve_alb(elb, args.alb.clone(), "127.0.0.1:0".parse()?).await?;
    eprintln!(
        "rehearsal-load: ALB data plane on http://{address}, {} requests/s",
        args.rate
    );
    let stop_file = args.stop_file.clone();
    let stop = async move {
        while !stop_file.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let figures = testbed::dataplane::load(
        format!("http://{address}/v1/checkin"),
        args.host,
        args.rate,
        stop,
    )
    .await;
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
