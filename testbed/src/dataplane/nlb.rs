//! The NLB's data plane for the rehearsal: a TCP proxy that sends each new connection to a
//! `healthy` target of the target group its listener forwards to (round-robin, at the port
//! registered for it) and keeps every established connection until one side closes it — as a
//! real NLB does with connection termination on deregistration off (its default), whatever
//! the target's state — and a load of long-lived connections and new ones every second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2 as elbv2;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The healthy targets (address:port) of the groups the NLB named `dns_name` forwards to.
pub async fn healthy_targets(elb: &elbv2::Client, dns_name: &str) -> anyhow::Result<Vec<String>> {
    let mut targets = Vec::new();
    let listeners = super::listeners_of(elb, dns_name).await?;
    for action in listeners.iter().flat_map(|l| l.default_actions()) {
        let mut groups: Vec<String> = super::forwards(action)
            .into_iter()
            .filter(|(_, weight)| *weight > 0)
            .map(|(group, _)| group)
            .collect();
        groups.sort();
        groups.dedup();
        for group in groups {
            targets.extend(super::healthy_in(elb, &group).await?);
        }
    }
    Ok(targets)
}

/// Starts the proxy on a free loopback port, following the NLB named `dns_name`.
pub async fn serve(elb: elbv2::Client, dns_name: String) -> anyhow::Result<std::net::SocketAddr> {
    let targets = super::follow(move || {
        let (elb, dns_name) = (elb.clone(), dns_name.clone());
        async move { healthy_targets(&elb, &dns_name).await }
    })
    .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let target = {
                let targets = targets.read().unwrap_or_else(|e| e.into_inner());
                (!targets.is_empty())
                    .then(|| targets[next.fetch_add(1, Ordering::Relaxed) % targets.len()].clone())
            };
            tokio::spawn(async move {
                // No healthy target: the NLB resets the connection.
                let Some(target) = target else { return };
                if let Ok(mut upstream) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    Ok(address)
}

/// What the TCP load saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TcpFigures {
    /// Long-lived connections opened at the start.
    pub held: usize,
    /// Of those, closed or silent before the end.
    pub dropped: usize,
    /// Which version the held connections were on (their first answer).
    pub held_on: BTreeMap<String, usize>,
    /// New connections (one a second), and those that got no answer.
    pub new: u64,
    pub new_failed: u64,
    /// Which version answered new connections, by second since the start.
    pub versions: BTreeMap<String, Vec<u64>>,
    pub examples: Vec<String>,
}

/// One exchange on `stream`: a line out, a line back (the server's version), within 3 s.
async fn ping(stream: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    stream.get_mut().write_all(b"ping\n").await?;
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_line(&mut line)).await??;
    anyhow::ensure!(read > 0, "closed by the other side");
    Ok(line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Holds `held` connections through `address`, pinging each every second, and opens a new
/// one every second, until `stop` resolves.
pub async fn load(
    address: std::net::SocketAddr,
    held: usize,
    stop: impl std::future::Future<Output = ()>,
) -> TcpFigures {
    let figures = Arc::new(Mutex::new(TcpFigures {
        held,
        ..TcpFigures::default()
    }));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..held {
        let (figures, done) = (figures.clone(), done.clone());
        tasks.spawn(async move {
            let counted = figures.clone();
            let failure = async {
                let mut stream = BufReader::new(TcpStream::connect(address).await?);
                let first = ping(&mut stream).await?;
                *counted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .held_on
                    .entry(first.clone())
                    .or_default() += 1;
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let version = ping(&mut stream).await?;
                    anyhow::ensure!(version == first, "moved from {first} to {version}");
                }
                anyhow::Ok(())
            }
            .await;
            if let Err(error) = failure {
                let mut f = figures.lock().unwrap_or_else(|e| e.into_inner());
                f.dropped += 1;
                f.examples.push(format!("held connection {n}: {error}"));
            }
        });
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let second = started.elapsed().as_secs();
        let answer = async {
            let mut stream = BufReader::new(TcpStream::connect(address).await?);
            ping(&mut stream).await
        }
        .await;
        let mut f = figures.lock().unwrap_or_else(|e| e.into_inner());
        f.new += 1;
        match answer {
            Ok(version) => f.versions.entry(version).or_default().push(second),
            Err(error) => {
                f.new_failed += 1;
                if f.examples.len() < 10 {
                    f.examples
                        .push(format!("new connection at {second} s: {error}"));
                }
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    figures.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
