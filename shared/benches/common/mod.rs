//! Helpers shared by the benchmarks.

use std::collections::HashMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sidrec::{Sid, SidIndex};

/// 3 levels of 256 random codes; items whose 3 codes collide all get a 4th code (their rank in
/// the collision group), as SID generators do to make SIDs unique.
pub fn synthetic_index(items: usize, rng: &mut ChaCha8Rng) -> SidIndex {
    let codes: Vec<[u32; 3]> = (0..items)
        .map(|_| {
            [
                rng.gen_range(0..256),
                rng.gen_range(0..256),
                rng.gen_range(0..256),
            ]
        })
        .collect();
    let mut groups: HashMap<[u32; 3], u32> = HashMap::new();
    for c in &codes {
        *groups.entry(*c).or_default() += 1;
    }
    let mut seen: HashMap<[u32; 3], u32> = HashMap::new();
    codes
        .iter()
        .enumerate()
        .map(|(item, c)| {
            let mut v = c.to_vec();
            if groups[c] > 1 {
                let k = seen.entry(*c).or_default();
                v.push(*k);
                *k += 1;
            }
            (item as u32, Sid::from_codes(v))
        })
        .collect()
}
