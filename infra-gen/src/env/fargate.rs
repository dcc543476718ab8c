//! Fargate pod sizing. Fargate runs each pod on a micro-VM of one of a fixed set of
//! vCPU/memory combinations, chosen by rounding the pod's needs up. It adds 256 MiB for its
//! own agents, and uses the larger of request and limit of each container.
//! <https://docs.aws.amazon.com/eks/latest/userguide/fargate-pod-configuration.html>

use std::fmt;

/// A Fargate size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FargateSize {
    /// vCPU: 0.25, 0.5, 1, 2, 4, 8 or 16.
    pub vcpu: f64,
    /// Memory in GB (0.5 for the smallest size).
    pub memory_gb: f64,
}

impl fmt::Display for FargateSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} vCPU / {} GB", self.vcpu, self.memory_gb)
    }
}

/// Memory Fargate adds to every pod, in MiB.
pub const OVERHEAD_MIB: f64 = 256.0;

/// vCPU and the memory choices (GB) that go with it.
fn combinations() -> Vec<(f64, Vec<f64>)> {
    let steps = |from: u32, to: u32, step: usize| {
        (from..=to).step_by(step).map(f64::from).collect::<Vec<_>>()
    };
    vec![
        (0.25, vec![0.5, 1.0, 2.0]),
        (0.5, steps(1, 4, 1)),
        (1.0, steps(2, 8, 1)),
        (2.0, steps(4, 16, 1)),
        (4.0, steps(8, 30, 1)),
        (8.0, steps(16, 60, 4)),
        (16.0, steps(32, 120, 8)),
    ]
}

/// The smallest Fargate size holding `millicores` of CPU and `mebibytes` of memory (the
/// 256 MiB overhead is added here), or `None` when no size is large enough.
pub fn size_for(millicores: f64, mebibytes: f64) -> Option<FargateSize> {
    let vcpu_needed = millicores / 1000.0;
    // Fargate's GB are GiB: 1 GB = 1024 MiB.
    let gb_needed = (mebibytes + OVERHEAD_MIB) / 1024.0;
    combinations().into_iter().find_map(|(vcpu, memories)| {
        if vcpu + 1e-9 < vcpu_needed {
            return None;
        }
        memories
            .into_iter()
            .find(|gb| *gb + 1e-9 >= gb_needed)
            .map(|memory_gb| FargateSize { vcpu, memory_gb })
    })
}

/// Parses a CPU quantity (`500m`, `1`, `0.5`) into millicores.
pub fn parse_cpu(text: &str) -> Option<f64> {
    let text = text.trim();
    let value = match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()?,
        None => text.parse::<f64>().ok()? * 1000.0,
    };
    (value.is_finite() && value > 0.0).then_some(value)
}

/// Parses a memory quantity (`512Mi`, `1Gi`, `1G`, `1000M`, `1073741824`) into MiB.
pub fn parse_memory(text: &str) -> Option<f64> {
    let text = text.trim();
    let units: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0_f64.powi(4)),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("", 1.0),
    ];
    let (number, factor) = units.iter().find_map(|(suffix, factor)| {
        text.strip_suffix(suffix)
            .filter(|n| !n.is_empty())
            .map(|n| (n, *factor))
    })?;
    let bytes = number.parse::<f64>().ok()? * factor;
    (bytes.is_finite() && bytes > 0.0).then_some(bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(cpu: &str, memory: &str) -> Option<String> {
        size_for(parse_cpu(cpu).unwrap(), parse_memory(memory).unwrap()).map(|s| s.to_string())
    }

    #[test]
    fn rounds_up_to_the_next_valid_pair_including_the_overhead() {
        assert_eq!(size("250m", "256Mi").as_deref(), Some("0.25 vCPU / 0.5 GB"));
        assert_eq!(
            size("250m", "512Mi").as_deref(),
            Some("0.25 vCPU / 1 GB"),
            "512 + 256 MiB > 0.5 GB"
        );
        assert_eq!(size("500m", "1Gi").as_deref(), Some("0.5 vCPU / 2 GB"));
        assert_eq!(size("1", "4Gi").as_deref(), Some("1 vCPU / 5 GB"));
        assert_eq!(size("300m", "3Gi").as_deref(), Some("0.5 vCPU / 4 GB"));
        assert_eq!(
            size("250m", "4Gi").as_deref(),
            Some("1 vCPU / 5 GB"),
            "0.5 vCPU tops out at 4 GB"
        );
        assert_eq!(
            size("4", "40Gi").as_deref(),
            Some("8 vCPU / 44 GB"),
            "8 vCPU memory comes in 4 GB steps"
        );
        assert_eq!(size("16", "119Gi").as_deref(), Some("16 vCPU / 120 GB"));
    }

    #[test]
    fn too_big_pods_have_no_size() {
        assert_eq!(size("17", "1Gi"), None);
        assert_eq!(size("16", "120Gi"), None, "120 GiB + 256 MiB does not fit");
    }

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(parse_cpu("500m"), Some(500.0));
        assert_eq!(parse_cpu("0.5"), Some(500.0));
        assert_eq!(parse_cpu("2"), Some(2000.0));
        assert_eq!(parse_cpu("lots"), None);
        assert_eq!(parse_memory("1Gi"), Some(1024.0));
        assert_eq!(parse_memory("512Mi"), Some(512.0));
        assert_eq!(parse_memory("1G").map(|m| m.round()), Some(954.0));
        assert_eq!(parse_memory("1Gb"), None);
    }
}
