//! `sidrec-trainer embed` end to end on a tiny dataset (needs the all-MiniLM-L6-v2 files:
//! skipped without them unless `SIDREC_REQUIRE_SHARED=1`).

use std::process::Command;

use candle_core::Device;
use sidrec::embed::{item_text, TextEncoder};
use sidrec::npy::read_npy;

const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");

#[test]
fn writes_rows_in_item_id_order_with_ids() {
    let Some(enc_dir) = sidrec::testing::encoder_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let items = r#"{
        "10": {"title": "Digital caliper &amp; gauge", "description": "['Stainless', 'LCD']"},
        "2": {"title": "Hex bolt", "description": ""},
        "7": {"title": "Nitrile gloves, box of 100 <b>large</b>", "description": "['Powder free']"}
    }"#;
    std::fs::write(data.join("items.json"), items).unwrap();
    let out = dir.path().join("emb/items.npy");
    let o = Command::new(BIN)
        .args(["embed", "--data", data.to_str().unwrap(), "--encoder"])
        .arg(&enc_dir)
        .args([
            "--out",
            out.to_str().unwrap(),
            "--batch-size",
            "2",
            "--normalize",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("items/s"), "{stdout}");

    let m = read_npy(&out).unwrap();
    assert_eq!((m.rows, m.cols), (3, 384));
    let ids: Vec<u32> =
        serde_json::from_slice(&std::fs::read(dir.path().join("emb/items.npy.ids.json")).unwrap())
            .unwrap();
    assert_eq!(ids, vec![2, 7, 10]);

    let parsed = sidrec::data::items::parse_items(items, &data).unwrap();
    let enc = TextEncoder::load(&enc_dir, &Device::Cpu, 256).unwrap();
    for (row, id) in ids.iter().enumerate() {
        let text = item_text(&parsed[id]);
        let want = enc.encode_batch(&[text.as_str()], true).unwrap();
        for (a, b) in m.row(row).iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "row {row} (item {id})");
        }
    }
}
