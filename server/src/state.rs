//! Shared server state: the catalogue and the engine (both swappable), the batcher, the
//! history store, reload bookkeeping and the metrics.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use candle_core::Device;
use sidrec::decode::ScoreMode;

use serde::Serialize;
use sidrec::catalogue::Catalogue;
use sidrec::data::DatasetDir;

use crate::engine::batcher::BatcherConfig;
use crate::engine::Engine;
use crate::engine::{BeamLimits, Infer};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::search::TitleIndex;
use crate::store::{HistoryStore, MemoryHistory, ResponseCache};

/// Summary of a loaded catalogue (the `catalogue` member of `/readyz`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CatalogueInfo {
    /// Items with a SID.
    pub items: usize,
    /// Distinct SIDs.
    pub unique_sids: usize,
    /// Most SID levels of any item.
    pub sid_levels: usize,
    /// Items whose SID another item shares.
    pub collided_items: usize,
    /// The directory it was read from.
    pub source: String,
}

/// A catalogue with its search index, immutable once built.
#[derive(Debug)]
pub struct LoadedCatalogue {
    /// Id ↔ SID ↔ title maps.
    pub catalogue: Catalogue,
    /// Fuzzy title index.
    pub titles: TitleIndex,
    /// Summary.
    pub info: CatalogueInfo,
}

impl LoadedCatalogue {
    /// Build the search index of a catalogue read from `source`.
    pub fn new(catalogue: Catalogue, source: impl Into<String>) -> Self {
        let report = catalogue.collision_report();
        let info = CatalogueInfo {
            items: catalogue.len(),
            unique_sids: report.unique_sids,
            sid_levels: catalogue.iter().map(|i| i.sid.len()).max().unwrap_or(0),
            collided_items: report.collided_items,
            source: source.into(),
        };
        let titles = TitleIndex::new(&catalogue);
        Self {
            catalogue,
            titles,
            info,
        }
    }

    /// Read the items and SID index of a dataset or checkpoint directory (blocking).
    pub fn load(dir: &Path) -> sidrec::Result<Self> {
        let ds = DatasetDir::discover(dir)?;
        let index = ds.read_index()?;
        let items = ds.read_items()?;
        let catalogue = Catalogue::new(&index, &items)?;
        Ok(Self::new(catalogue, dir.display().to_string()))
    }
}

/// The model side of the configuration.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// A checkpoint directory, or a directory whose subdirectories are checkpoints.
    pub dir: PathBuf,
    /// Compute device.
    pub device: Device,
    /// Beam scoring; `None`: each checkpoint's own (exact unless it was trained for fast).
    pub mode: Option<ScoreMode>,
    /// Batching limits.
    pub batcher: BatcherConfig,
    /// Beam limits of a request and of a call.
    pub beams: BeamLimits,
    /// Directories besides `dir` that `/admin/reload` may load checkpoints from.
    pub reload_allow: Vec<PathBuf>,
}

/// Everything [`AppState`] is built from.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Dataset directory of the catalogue (without a model).
    pub data_dir: Option<PathBuf>,
    /// The model to serve, if any; its checkpoint's catalogue then replaces `data_dir`'s.
    pub model: Option<ModelOptions>,
    /// Where user histories live.
    pub history: Arc<dyn HistoryStore>,
    /// Longest stored history per user.
    pub history_cap: usize,
    /// The response cache of `/v1/recommend` (`None`: off).
    pub cache: Option<Arc<dyn ResponseCache>>,
    /// How long a cached response is served.
    pub cache_ttl: Duration,
    /// Most recent history items put in a prompt.
    pub max_history: usize,
    /// Deadline of a recommendation (504 past it).
    pub request_timeout: Duration,
    /// Bearer token of the `/admin` routes (`None`: they answer 401).
    pub admin_token: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            data_dir: None,
            model: None,
            history: Arc::new(MemoryHistory::new()),
            history_cap: 100,
            cache: None,
            cache_ttl: Duration::from_secs(60),
            max_history: 10,
            request_timeout: Duration::from_secs(10),
            admin_token: None,
        }
    }
}

/// The outcome of the last reload attempt that failed, until one succeeds.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Error of the last failed reload (cleared by a successful one).
    pub last_error: Option<String>,
    /// The checkpoint that failed (directory, and version or stamp), so the watcher does not
    /// retry it every tick.
    pub last_failed: Option<(PathBuf, String)>,
}

#[derive(Debug)]
struct Inner {
    options: ServerOptions,
    catalogue: RwLock<Option<Arc<LoadedCatalogue>>>,
    engine: RwLock<Option<Arc<Engine>>>,
    reload_lock: tokio::sync::Mutex<()>,
    reload_status: Mutex<ReloadStatus>,
    infer: Option<Infer>,
    metrics: Metrics,
}

/// Cheaply cloneable handle on the server state.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// State with no catalogue yet; `data_dir` is where it will be loaded from.
    pub fn new(data_dir: Option<PathBuf>) -> Self {
        Self::with_options(ServerOptions {
            data_dir,
            ..ServerOptions::default()
        })
        .expect("no batcher thread to start without a model")
    }

    /// State for `options`; starts the inference facade's compute thread when a model is
    /// configured.
    pub fn with_options(options: ServerOptions) -> std::io::Result<Self> {
        let metrics = Metrics::new();
        let infer = match &options.model {
            Some(m) => Some(Infer::start(m.batcher, m.beams, metrics.clone())?),
            None => None,
        };
        Ok(AppState(Arc::new(Inner {
            options,
            catalogue: RwLock::new(None),
            engine: RwLock::new(None),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_status: Mutex::new(ReloadStatus::default()),
            infer,
            metrics,
        })))
    }

    /// State serving `catalogue` right away.
    pub fn with_catalogue(catalogue: LoadedCatalogue) -> Self {
        let state = Self::new(None);
        state.set_catalogue(catalogue);
        state
    }

    /// The options the state was built with.
    pub fn options(&self) -> &ServerOptions {
        &self.0.options
    }

    /// The configured data directory.
    pub fn data_dir(&self) -> Option<&Path> {
        self.0.options.data_dir.as_deref()
    }

    /// The serving catalogue, or `not_ready` while none is loaded.
    pub fn catalogue(&self) -> Result<Arc<LoadedCatalogue>, ApiError> {
        self.0
            .catalogue
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| ApiError::NotReady("the catalogue is still loading".into()))
    }

    /// Swap in a catalogue; requests already holding the old one finish on it.
    pub fn set_catalogue(&self, catalogue: LoadedCatalogue) {
        self.set_catalogue_arc(Arc::new(catalogue));
    }

    fn set_catalogue_arc(&self, catalogue: Arc<LoadedCatalogue>) {
        self.0
            .metrics
            .catalogue_items
            .set(catalogue.info.items as i64);
        *self.0.catalogue.write().unwrap_or_else(|e| e.into_inner()) = Some(catalogue);
    }

    /// True when this server serves a model (`--model-dir`).
    pub fn serves_model(&self) -> bool {
        self.0.options.model.is_some()
    }

    /// The serving engine, if any.
    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.0
            .engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swap in a verified engine (and its catalogue); returns the previous one. Jobs already
    /// queued keep their own `Arc` of the old engine and finish on it.
    pub fn set_engine(&self, engine: Arc<Engine>) -> Option<Arc<Engine>> {
        self.0.metrics.set_model_version(engine.version());
        self.set_catalogue_arc(engine.catalogue.clone());
        self.0
            .engine
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(engine)
    }

    /// Serialises reloads (`try_lock` for `/admin/reload`, `lock` for the watcher).
    pub fn reload_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.0.reload_lock
    }

    /// The last failed reload, if none succeeded since.
    pub fn reload_status(&self) -> ReloadStatus {
        self.0
            .reload_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Record a reload outcome: `Some` for a failure of that checkpoint, `None` for a success.
    pub fn set_reload_failure(&self, failure: Option<(PathBuf, String, String)>) {
        let mut s = self
            .0
            .reload_status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match failure {
            Some((dir, stamp, error)) => {
                s.last_error = Some(error);
                s.last_failed = Some((dir, stamp));
            }
            None => *s = ReloadStatus::default(),
        }
    }

    /// The inference facade (present when a model is configured).
    pub fn infer(&self) -> Option<&Infer> {
        self.0.infer.as_ref()
    }

    /// The history store.
    pub fn history(&self) -> &dyn HistoryStore {
        self.0.options.history.as_ref()
    }

    /// The response cache, when one is configured (with a non-zero TTL).
    pub fn cache(&self) -> Option<&dyn ResponseCache> {
        let o = &self.0.options;
        o.cache.as_deref().filter(|_| !o.cache_ttl.is_zero())
    }

    /// Load the catalogue of the configured data directory on a blocking thread and swap it in.
    pub async fn load_configured(&self) -> anyhow::Result<()> {
        let dir = self
            .data_dir()
            .ok_or_else(|| anyhow::anyhow!("no data directory configured"))?
            .to_path_buf();
        let start = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || LoadedCatalogue::load(&dir)).await??;
        tracing::info!(
            items = loaded.info.items,
            unique_sids = loaded.info.unique_sids,
            source = %loaded.info.source,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "catalogue loaded"
        );
        self.set_catalogue(loaded);
        Ok(())
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}
