//! Semantic-ID construction by residual quantization of item embeddings (the k-means family).
//!
//! * [`kmeans`] — k-means (k-means++ seeding, Lloyd, empty-cluster repair, blocked distances);
//! * [`balanced`] — capacity-constrained assignment with sizes `⌊n/K⌋` or `⌊n/K⌋ + 1`;
//! * [`rq`] — `rq-kmeans` / `rq-kmeans-constrained` SIDs and the collision policies;
//! * [`report`] — the SID quality report, for a fresh build or any existing index.
//!
//! Everything is a deterministic function of the embeddings and the seed.

pub mod balanced;
pub mod kmeans;
pub mod report;
pub mod rq;

pub use kmeans::{kmeans, KMeans, KMeansConfig};
pub use report::{sid_report, CollisionStats, LevelStats, SidReport};
pub use rq::{build_sids, CollisionPolicy, Method, RqConfig, RqOutput, SinkhornConfig};
