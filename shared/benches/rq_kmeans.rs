//! RQ-KMeans on synthetic data: time and peak memory.
//!
//! `cargo bench -p sidrec --bench rq_kmeans -- [N] [DIM] [LEVELS] [K] [--balanced]`
//! (defaults 1000000 384 3 256). The data are a Gaussian mixture (1024 random centres, unit
//! noise), generated with a fixed seed; peak memory is the process' VmHWM from /proc.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sidrec::npy::Matrix;
use sidrec::quantize::{build_sids, CollisionPolicy, Method, RqConfig};

fn vm_hwm_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn synthetic(n: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..1024 * d).map(|_| rng.gen_range(-3.0..3.0)).collect();
    let data: Vec<f32> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut r =
                ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let c = r.gen_range(0..1024);
            let centres = &centres;
            (0..d).map(move |j| {
                centres[c * d + j] + r.gen_range(-1.0f32..1.0) + r.gen_range(-1.0f32..1.0)
            })
        })
        .collect();
    Matrix::new(n, d, data)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let balanced = args.iter().any(|a| a == "--balanced");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let n = nums.first().copied().unwrap_or(1_000_000);
    let d = nums.get(1).copied().unwrap_or(384);
    let levels = nums.get(2).copied().unwrap_or(3);
    let k = nums.get(3).copied().unwrap_or(256);
    let t = Instant::now();
    let x = synthetic(n, d, 7);
    let gen_s = t.elapsed().as_secs_f64();
    let cfg = RqConfig {
        method: Method::RqKmeans,
        levels,
        codebook_size: k,
        balanced,
        collisions: CollisionPolicy::ExtraLevel,
        ..RqConfig::default()
    };
    let t = Instant::now();
    let out = build_sids(&x, &cfg, &mut |_, _, _| {}).expect("rq-kmeans");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "rq-kmeans n={n} dim={d} levels={levels} K={k} balanced={balanced} threads={}: \
         data {gen_s:.1} s, build {secs:.1} s, peak RSS {:.0} MiB",
        rayon::current_num_threads(),
        vm_hwm_mib().unwrap_or(f64::NAN)
    );
    println!("{}", out.report.summary());
}
