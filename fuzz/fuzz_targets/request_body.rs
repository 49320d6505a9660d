//! The JSON request parsers of the server: `/v1/recommend` bodies and the numbers and id lists
//! inside them. Any input must give a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidrec_server::routes::{body, recommend};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = recommend::parse_request(&v);
    let _ = body::integer(&v);
    let _ = body::item_ids(&v, "history");
    if let Some(obj) = v.as_object() {
        let _ = body::int_in(obj, "k", 1, 100, 10);
        if let Some(list) = obj.get("requests").and_then(|r| r.as_array()) {
            for entry in list {
                let _ = recommend::parse_request(entry);
            }
        }
    }
});
