//! Readers and writers for the dataset artifacts, in MiniOneRec's formats.

pub mod dataset;
pub mod index;
pub mod info;
pub mod items;
pub mod pylit;
pub mod split;

pub use dataset::{DatasetDir, DatasetFiles, Split};
pub use items::{ItemMeta, Items};
pub use split::InteractionRow;
