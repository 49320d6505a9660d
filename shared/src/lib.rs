//! `sidrec`: the library shared by the sidrec server and trainer.
//!
//! Data formats (MiniOneRec CSV splits, `.item.json`, `.index.json`, info files), the catalogue,
//! the compiled SID trie, and the reference's ranking metrics.

pub mod catalogue;
pub mod data;
pub mod error;
pub mod io;
pub mod metrics;
pub mod sid;
pub mod testing;
pub mod trie;

pub use error::{Error, Result};
pub use sid::{ItemId, Sid, SidIndex, SidToken};
