//! `sidrec-loadtest`: load tests of `sidrec-server` as scenario files.
//!
//! A scenario ([`scenario::Scenario`], a TOML file) says what to send ([`workload`]: a weighted
//! mix of recommendations, batches, `user_id` requests after events, and SID lookups), how
//! ([`driver`]: open loop at a constant or Poisson rate, or closed loop at a fixed
//! concurrency), for how long, and what to do to the system meanwhile ([`actions`]: hot swaps,
//! commands such as stopping Redis). [`run`] executes it, a sweep steps the offered rate to
//! find the knee, [`record`] measures every operation (latency from the intended and from the
//! actual send time, outcomes, versions), [`check`] validates every answer, [`scrape`] samples
//! the server's `/metrics`, and [`report`] writes JSON, HTML with charts and a summary.

pub mod actions;
pub mod check;
pub mod driver;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod scrape;
pub mod workload;

use std::path::Path;

use anyhow::Context;
use sidrec::catalogue::Catalogue;
use sidrec::data::DatasetDir;

pub use report::Report;
pub use sidrec::duration::parse_duration;

/// Read the catalogue (items + SID index) of a dataset or checkpoint directory.
pub fn load_catalogue(dir: &Path) -> anyhow::Result<Catalogue> {
    let ds = DatasetDir::discover(dir)?;
    let index = ds.read_index()?;
    let items = ds.read_items()?;
    Catalogue::new(&index, &items).with_context(|| format!("catalogue of {}", dir.display()))
}
