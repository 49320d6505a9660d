//! Semantic-ID construction by residual quantization of item embeddings (the k-means family).
//!
//! * [`kmeans`] — k-means (k-means++ seeding, Lloyd, empty-cluster repair, blocked distances);
//! * [`balanced`] — capacity-constrained assignment with sizes `⌊n/K⌋` or `⌊n/K⌋ + 1`;
//! * [`rq`] — `rq-kmeans` / `rq-kmeans-constrained` SIDs and the collision policies;
//! * [`rqvae`] — `rq-vae`, the reference's RQ-VAE trained with candle;
//! * [`rqkplus`] — `rq-kmeans-plus`, a residual encoder on warm-started constrained codebooks;
//! * [`report`] — the SID quality report, for a fresh build or any existing index.
//!
//! Everything is a deterministic function of the embeddings and the seed (the trained methods:
//! on one machine and thread count).

pub mod balanced;
pub mod kmeans;
pub mod report;
pub mod rq;
pub mod rqkplus;
pub mod rqvae;

pub use kmeans::{kmeans, KMeans, KMeansConfig};
pub use report::{sid_report, CollisionStats, LevelStats, SidReport};
pub use rq::{build_sids, CollisionPolicy, Method, RqConfig, RqOutput, SinkhornConfig};
pub use rqvae::{NeuralConfig, TrainingSummary};
