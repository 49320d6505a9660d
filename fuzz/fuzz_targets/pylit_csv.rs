//! The readers of the reference's CSV splits, whose cells hold Python list literals.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sidrec::data::{pylit, split};

fuzz_target!(|data: &[u8]| {
    if let Ok(cell) = std::str::from_utf8(data) {
        let _ = pylit::parse_str_list(cell);
        let _ = pylit::parse_int_list(cell);
    }
    let _ = split::read_split_from(data, Path::new("fuzz.csv"));
});
