//! `sidrec`: the library shared by the sidrec server and trainer.
//!
//! Data formats (MiniOneRec CSV splits, `.item.json`, `.index.json`, info files), the catalogue,
//! item text embeddings and `.npy` matrices, the compiled SID trie, prompts and tokenizers, the Qwen2 model, constrained beam search, and
//! the reference's ranking metrics.

pub mod catalogue;
pub mod checkpoint;
pub mod data;
pub mod decode;
pub mod device;
pub mod duration;
pub mod embed;
pub mod ensemble;
pub mod error;
pub mod hybrid;
pub mod io;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod prompt;
pub mod quantize;
pub mod random;
pub mod sid;
pub mod testing;
pub mod tokenizer;
pub mod trie;

pub use error::{Error, Result};
pub use sid::{ItemId, Sid, SidIndex, SidToken};
