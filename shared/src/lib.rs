//! `sidrec`: the library shared by the sidrec server and trainer.
//!
//! Data formats (MiniOneRec CSV splits, `.item.json`, `.index.json`, info files), the catalogue,
//! the compiled SID trie, the reference's ranking metrics, and the Qwen2 model.

pub mod error;
pub mod model;
pub mod sid;

pub use error::{Error, Result};
pub use sid::{ItemId, Sid, SidIndex, SidToken};
