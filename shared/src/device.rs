//! Choosing the compute device from a `--device` string.

use candle_core::Device;

use crate::error::{Error, Result};

/// Parse `cpu`, `cuda` or `cuda:N` into a device; CUDA needs the `cuda` cargo feature.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "bad device `{spec}` (expected cpu, cuda or cuda:N)"
                ))
            })?,
        None => {
            return Err(Error::Invalid(format!(
                "bad device `{spec}` (expected cpu, cuda or cuda:N)"
            )))
        }
    };
    cuda_device(ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Ok(Device::new_cuda(ordinal)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device> {
    Err(Error::Invalid(
        "this build has no CUDA support; rebuild with `--features cuda`".into(),
    ))
}

/// Keep freed tensor buffers in the process heap instead of returning them to the system.
///
/// A training step allocates and frees hundreds of activation-sized buffers. glibc serves
/// blocks above its mmap threshold (128 KiB at first) with fresh `mmap`s and unmaps them on
/// free, so every such buffer costs page faults and the kernel's zero-fill of each page; the
/// heap trims its top too. With both thresholds raised, the same blocks are reused from the
/// heap: measured on the `tiny` SFT step, 12 % less CPU per step (BENCHMARKS.md, "Fused CPU
/// kernels"). Call once at the start of a binary, before the first tensor op. The cost is that
/// the process keeps its peak heap. A no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc caps the mmap threshold at 32 MiB on 64-bit targets; larger blocks (a big
        // vocabulary's logits) still go to mmap, which is rare enough not to matter.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// Run `f` on a worker of rayon's global pool (the one pool that candle's matrix products and
/// the fused kernels share), building that pool first with a roomy stack if nothing has yet.
///
/// Called from outside the pool, every parallel op of a training step hands its work to the
/// pool and parks the calling thread until the workers are done: a wake-up and a hand-off per
/// op, hundreds per step, while the workers spin idle through the caller's serial work (graph
/// bookkeeping, allocation). Run from a worker, the serial work and the parallel ops stay on
/// the same threads and the caller's share of each op runs in place. Worker stacks are 64 MiB
/// because candle's backward pass walks the graph recursively.
pub fn run_in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // Fails only when the pool already exists (then that pool is used as it is).
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(64 << 20)
        .build_global();
    rayon::scope(|_| f())
}

/// CPU seconds (user + system, all threads) this process has used so far, from
/// `/proc/self/stat` (10 ms resolution; `None` where that file is missing or unreadable). On a
/// shared machine it is steadier than wall time as a measure of the work done.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_seconds_reads_this_process() {
        let before = cpu_seconds().expect("/proc/self/stat parses");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds().expect("parses") >= before && before >= 0.0);
    }

    #[test]
    fn parses_specs() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(parse_device("cuda:0")
            .unwrap_err()
            .to_string()
            .contains("--features cuda"));
    }
}
