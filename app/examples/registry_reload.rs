//! `scripts/bench` registry-scale probe, without a database: fills the embedded store with N
//! active registrations, then times a full reload (what a replica does at start and after a
//! gap in the change feed: load the active ids, build the set) and measures the memory the set adds. The same step on MongoDB
//! adds the transfer of N ids, which `scripts/bench` measures separately.
//!
//! Usage: `registry_reload N` → prints `RELOAD <n> <seconds> <resident MiB>`;
//! `registry_reload N --store-only` fills the store but builds no set: the difference of the
//! two resident sizes is what the set costs (two processes, so the allocator cannot hide it by
//! reusing memory freed in between).

use std::time::{Duration, Instant};

use controltower::domain::{DeviceId, Registration, RegistrationInput, RegistrationSpec};
use controltower::registry::Registry;
use controltower::store::Store;
use controltower::store::memory::MemoryStore;

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let store = Store::Memory(MemoryStore::new(Duration::from_secs(86_400)));
    let now = controltower::domain::now();
    let spec = RegistrationSpec::parse(
        RegistrationInput {
            reason: "bench".into(),
            ..Default::default()
        },
        now,
    )?;
    // One at a time: a big temporary vector, once freed, would leave room the set could reuse
    // unseen, and the resident size would no longer show what the set costs.
    for i in 0..n {
        let id = DeviceId::parse(&format!("device-{i:08}-a1b2c3d4"))?;
        store
            .save(&Registration::new(id, spec.clone(), "bench", now))
            .await?;
    }
    let registry = Registry::new();
    if std::env::args().any(|a| a == "--store-only") {
        println!("RELOAD {n} 0 {:.1}", resident_mib());
        return Ok(());
    }
    let started = Instant::now();
    registry.reload(&store).await?;
    let took = started.elapsed();
    if registry.len() != n {
        return Err(format!(
            "the snapshot holds {} registrations, expected {n}",
            registry.len()
        )
        .into());
    }
    println!("RELOAD {n} {:.3} {:.1}", took.as_secs_f64(), resident_mib());
    Ok(())
}
