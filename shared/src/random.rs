//! Seeded random draws that the rand crate lacks without `rand_distr`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A standard normal draw by Box–Muller, so that what it initialises depends on the seed only.
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
