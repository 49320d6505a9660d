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
}

impl ScenarioKind {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::LookupTitle => "lookup-title",
            ScenarioKind::LookupSid => "lookup-sid",
            ScenarioKind::LookupId => "lookup-id",
        }
    }

    /// Build the scenario over a catalogue.
    pub fn build(self, catalogue: &Catalogue) -> anyhow::Result<Box<dyn Scenario>> {
        let (param, values): (&'static str, Vec<String>) = match self {
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

/// Read the catalogue (items + SID index) of a dataset or checkpoint directory.
pub fn load_catalogue(dir: &Path) -> anyhow::Result<Catalogue> {
    let ds = DatasetDir::discover(dir)?;
    let index = ds.read_index()?;
    let items = ds.read_items()?;
    Catalogue::new(&index, &items).with_context(|| format!("catalogue of {}", dir.display()))
}
