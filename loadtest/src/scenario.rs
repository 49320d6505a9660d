//! What to send: a scenario turns a random stream into requests.
//!
//! Each scenario implements [`Scenario`]; the generator only sees [`RequestSpec`]s, so a
//! `recommend` scenario (a POST with a JSON body built from held-out histories) is one more
//! implementation and one more [`ScenarioKind`] variant, with no change to the generator.

use std::path::Path;

use anyhow::Context;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sidrec::catalogue::Catalogue;
use sidrec::data::DatasetDir;

/// One request to send, relative to the base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// HTTP method.
    pub method: reqwest::Method,
    /// Path, starting with `/`.
    pub path: String,
    /// Query parameters (percent-encoded when the URL is built).
    pub query: Vec<(&'static str, String)>,
    /// JSON body, if any.
    pub json_body: Option<String>,
}

/// A source of requests.
pub trait Scenario: Send {
    /// The scenario's name (as on the command line).
    fn name(&self) -> &'static str;
    /// The next request.
    fn next_request(&mut self, rng: &mut ChaCha8Rng) -> RequestSpec;
}

/// The scenarios the CLI offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioKind {
    /// `GET /v1/sid/lookup?title=` with a random catalogue title.
    LookupTitle,
    /// `GET /v1/sid/lookup?sid=` with a random catalogue SID.
    LookupSid,
    /// `GET /v1/sid/lookup?item_id=` with a random catalogue item id.
    LookupId,
    /// `POST /v1/recommend` (`k` 10, `num_beams` 50) with a held-out history (the test split's
    /// histories when the data directory has one, else random catalogue histories).
    Recommend,
}

impl ScenarioKind {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::LookupTitle => "lookup-title",
            ScenarioKind::LookupSid => "lookup-sid",
            ScenarioKind::LookupId => "lookup-id",
            ScenarioKind::Recommend => "recommend",
        }
    }

    /// Build the scenario over a catalogue.
    pub fn build(self, catalogue: &Catalogue) -> anyhow::Result<Box<dyn Scenario>> {
        let (param, values): (&'static str, Vec<String>) = match self {
            ScenarioKind::Recommend => {
                return Ok(Box::new(Recommend::random(catalogue, RANDOM_HISTORIES, 0)?))
            }
            ScenarioKind::LookupTitle => (
                "title",
                catalogue
                    .iter()
                    .filter(|i| !i.title.trim().is_empty())
                    .map(|i| i.title.clone())
                    .collect(),
            ),
            ScenarioKind::LookupSid => {
                let mut sids: Vec<String> = catalogue.iter().map(|i| i.sid.to_string()).collect();
                sids.sort();
                sids.dedup();
                ("sid", sids)
            }
            ScenarioKind::LookupId => (
                "item_id",
                catalogue.iter().map(|i| i.id.to_string()).collect(),
            ),
        };
        anyhow::ensure!(
            !values.is_empty(),
            "the catalogue has nothing to draw `{param}` queries from"
        );
        Ok(Box::new(Lookup {
            name: self.name(),
            param,
            values,
        }))
    }
}

/// `GET /v1/sid/lookup?{param}={value}` with a value drawn uniformly.
#[derive(Debug, Clone)]
pub struct Lookup {
    name: &'static str,
    param: &'static str,
    values: Vec<String>,
}

impl Scenario for Lookup {
    fn name(&self) -> &'static str {
        self.name
    }

    fn next_request(&mut self, rng: &mut ChaCha8Rng) -> RequestSpec {
        let v = &self.values[rng.gen_range(0..self.values.len())];
        RequestSpec {
            method: reqwest::Method::GET,
            path: "/v1/sid/lookup".into(),
            query: vec![(self.param, v.clone())],
            json_body: None,
        }
    }
}

/// Random histories a [`Recommend`] scenario draws from when there is no test split.
pub const RANDOM_HISTORIES: usize = 1000;
/// `k` of the recommend scenario.
pub const RECOMMEND_K: usize = 10;
/// `num_beams` of the recommend scenario.
pub const RECOMMEND_BEAMS: usize = 50;

/// `POST /v1/recommend` with a history drawn uniformly from a fixed list.
#[derive(Debug, Clone)]
pub struct Recommend {
    bodies: Vec<String>,
}

impl Recommend {
    /// Over these histories (item ids, oldest first; empty ones are skipped).
    pub fn new(histories: &[Vec<sidrec::ItemId>]) -> anyhow::Result<Self> {
        let bodies: Vec<String> = histories
            .iter()
            .filter(|h| !h.is_empty())
            .map(|h| {
                serde_json::json!({"history": h, "k": RECOMMEND_K, "num_beams": RECOMMEND_BEAMS})
                    .to_string()
            })
            .collect();
        anyhow::ensure!(!bodies.is_empty(), "no non-empty history to send");
        Ok(Self { bodies })
    }

    /// `n` random histories of 1 to 10 catalogue items.
    pub fn random(catalogue: &Catalogue, n: usize, seed: u64) -> anyhow::Result<Self> {
        use rand::SeedableRng;
        let ids: Vec<sidrec::ItemId> = catalogue.iter().map(|i| i.id).collect();
        anyhow::ensure!(!ids.is_empty(), "the catalogue is empty");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let histories: Vec<Vec<sidrec::ItemId>> = (0..n)
            .map(|_| {
                let len = rng.gen_range(1..=10);
                (0..len).map(|_| ids[rng.gen_range(0..ids.len())]).collect()
            })
            .collect();
        Self::new(&histories)
    }

    /// The test split's histories of the dataset in `dir` (items outside the catalogue
    /// dropped), or random ones when `dir` has no (non-empty) test split, e.g. a checkpoint.
    pub fn from_dir(dir: &Path, catalogue: &Catalogue) -> anyhow::Result<Self> {
        let ds = DatasetDir::discover(dir)?;
        let test = ds.split_path(sidrec::data::Split::Test);
        if !test.is_file() {
            return Self::random(catalogue, RANDOM_HISTORIES, 0);
        }
        let rows = ds.read_split(sidrec::data::Split::Test)?;
        let histories: Vec<Vec<sidrec::ItemId>> = rows
            .iter()
            .map(|r| {
                r.history_item_id
                    .iter()
                    .copied()
                    .filter(|&i| catalogue.get(i).is_some())
                    .collect()
            })
            .collect();
        if histories.iter().all(Vec::is_empty) {
            return Self::random(catalogue, RANDOM_HISTORIES, 0);
        }
        Self::new(&histories).with_context(|| format!("histories of {}", test.display()))
    }
}

impl Scenario for Recommend {
    fn name(&self) -> &'static str {
        "recommend"
    }

    fn next_request(&mut self, rng: &mut ChaCha8Rng) -> RequestSpec {
        RequestSpec {
            method: reqwest::Method::POST,
            path: "/v1/recommend".into(),
            query: Vec::new(),
            json_body: Some(self.bodies[rng.gen_range(0..self.bodies.len())].clone()),
        }
    }
}

/// Read the catalogue (items + SID index) of a dataset or checkpoint directory.
pub fn load_catalogue(dir: &Path) -> anyhow::Result<Catalogue> {
    let ds = DatasetDir::discover(dir)?;
    let index = ds.read_index()?;
    let items = ds.read_items()?;
    Catalogue::new(&index, &items).with_context(|| format!("catalogue of {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use sidrec::data::{ItemMeta, Items};
    use sidrec::{Sid, SidIndex};

    #[test]
    fn recommend_bodies_are_catalogue_histories() {
        let index: SidIndex = (0..20u32)
            .map(|i| (i, Sid::from_codes(vec![i, 0, 0])))
            .collect();
        let items: Items = (0..20u32).map(|i| (i, ItemMeta::new("t", ""))).collect();
        let cat = Catalogue::new(&index, &items).unwrap();
        let mut s = ScenarioKind::Recommend.build(&cat).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let r = s.next_request(&mut rng);
            assert_eq!(
                (r.method, r.path.as_str()),
                (reqwest::Method::POST, "/v1/recommend")
            );
            let v: serde_json::Value = serde_json::from_str(&r.json_body.unwrap()).unwrap();
            assert_eq!(
                (v["k"].as_u64(), v["num_beams"].as_u64()),
                (Some(10), Some(50))
            );
            let h = v["history"].as_array().unwrap();
            assert!((1..=10).contains(&h.len()));
            assert!(h.iter().all(|i| i.as_u64().unwrap() < 20));
        }
        assert!(Recommend::new(&[vec![]]).is_err());
        // A directory with an empty test split falls back to random histories.
        let dir = tempfile::tempdir().unwrap();
        let files = sidrec::data::DatasetFiles {
            items,
            index: Some(index),
            ..Default::default()
        };
        files.write(dir.path()).unwrap();
        assert!(Recommend::from_dir(dir.path(), &cat).is_ok());
    }
}
