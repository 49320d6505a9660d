//! The readers of the SID index (`*.index.json`), the item metadata (`*.item.json`) and the
//! info files (`*.info`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sidrec::data::{index, info, items};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = index::parse_index(text, Path::new("fuzz.index.json"));
    let _ = items::parse_items(text, Path::new("fuzz.item.json"));
    let _ = info::parse_info(text, Path::new("fuzz.info"));
});
