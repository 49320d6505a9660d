//! Build time and size of the compiled SID trie for a synthetic 1,000,000-item catalogue.
//!
//! A plain `harness = false` report (median of several builds, heap bytes, bytes per item),
//! because the trie's size matters as much as its build time and criterion cannot print bytes.
//! Run with `cargo bench -p sidrec --bench trie_build`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sidrec::trie::{SidTrie, SidVocab};
use sidrec::{Sid, SidIndex};

const ITEMS: u32 = 1_000_000;
const RUNS: usize = 7;

/// 4 levels of 256 uniformly random codes (collisions kept: a leaf lists all their items).
fn four_levels(rng: &mut ChaCha8Rng) -> SidIndex {
    (0..ITEMS)
        .map(|item| {
            let v = (0..4).map(|_| rng.gen_range(0..256)).collect();
            (item, Sid::from_codes(v))
        })
        .collect()
}

fn report(name: &str, index: &SidIndex) {
    // The reference's TokenExtender ids, after a Qwen-sized base vocabulary.
    let vocab = SidVocab::sequential(index, 151_665).expect("vocab");
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut trie = None;
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let t = black_box(SidTrie::build(black_box(index), &vocab).expect("build"));
        times.push(t0.elapsed());
        trie = Some(t);
    }
    times.sort();
    let trie = trie.expect("at least one run");
    let bytes = trie.heap_bytes();
    let nodes: Vec<usize> = (0..=trie.num_levels()).map(|d| trie.num_nodes(d)).collect();
    println!("trie_build/{name}");
    println!(
        "  items {}  levels {}  nodes per depth {:?}",
        trie.num_items(),
        trie.num_levels(),
        nodes
    );
    println!(
        "  build time: median {:.1} ms  (min {:.1}, max {:.1}, {RUNS} runs)",
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1])
    );
    println!(
        "  heap bytes: {bytes} ({:.2} MiB), {:.2} bytes/item",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / trie.num_items() as f64
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo test --benches` runs this binary too; keep that cheap.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let index = common::synthetic_index(ITEMS as usize, &mut rng);
    report("3x256+collision_level", &index);
    let index = four_levels(&mut rng);
    report("4x256", &index);
}
