//! Shared server state: the loaded catalogue (swappable) and the metrics.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use sidrec::catalogue::Catalogue;
use sidrec::data::DatasetDir;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::search::TitleIndex;

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

#[derive(Debug)]
struct Inner {
    data_dir: Option<PathBuf>,
    catalogue: RwLock<Option<Arc<LoadedCatalogue>>>,
    metrics: Metrics,
}

/// Cheaply cloneable handle on the server state.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// State with no catalogue yet; `data_dir` is where it will be loaded from.
    pub fn new(data_dir: Option<PathBuf>) -> Self {
        AppState(Arc::new(Inner {
            data_dir,
            catalogue: RwLock::new(None),
            metrics: Metrics::new(),
        }))
    }

    /// State serving `catalogue` right away.
    pub fn with_catalogue(catalogue: LoadedCatalogue) -> Self {
        let state = Self::new(None);
        state.set_catalogue(catalogue);
        state
    }

    /// The configured data directory.
    pub fn data_dir(&self) -> Option<&Path> {
        self.0.data_dir.as_deref()
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
        self.0
            .metrics
            .catalogue_items
            .set(catalogue.info.items as i64);
        *self.0.catalogue.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(catalogue));
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
