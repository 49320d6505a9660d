//! Optional prompt tokens end to end on a small synthetic dataset: `init --prompt-tokens` adds
//! them to the tokenizer and records them, `sft` trains on them, `eval` decodes with them, and
//! the server builds exactly eval's prompt for the same row.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use common::{ok, BIN};
use sidrec::checkpoint::Checkpoint;
use sidrec::data::{DatasetDir, Split};
use sidrec::prompt::{PromptTokens, TokenGroup, ITEM_TYPE_FIELD};
use sidrec_server::engine::Engine;
use sidrec_trainer::data::features::RowContexts;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn init_sft_eval_and_serve_with_prompt_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (data, ck, plain) = (p("data"), p("init"), p("plain"));
    ok(&[
        "data", "synth", "--items", "80", "--users", "80", "--seed", "4", "--out", &data,
    ]);

    // Without features.json the tokens that need it are refused, naming the file and the fix.
    let o = Command::new(BIN)
        .args([
            "init",
            "--data",
            &data,
            "--out",
            &ck,
            "--vocab-size",
            "400",
            "--prompt-tokens",
            "user,item-type",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("features.json") && err.contains("sidrec-trainer data features --data"),
        "{err}"
    );
    assert!(!Path::new(&ck).exists());

    ok(&["data", "features", "--data", &data]);
    ok(&[
        "init",
        "--data",
        &data,
        "--out",
        &ck,
        "--vocab-size",
        "400",
        "--prompt-tokens",
        "user,context,item-type",
    ]);
    ok(&[
        "init",
        "--data",
        &data,
        "--out",
        &plain,
        "--vocab-size",
        "400",
    ]);

    // Recorded in sidrec.json; a plain checkpoint has no such field (as before it existed).
    let all = PromptTokens::new(&TokenGroup::ALL);
    assert_eq!(
        json(&Path::new(&ck).join("sidrec.json"))["prompt_tokens"],
        serde_json::json!(["user", "context", "item-type"])
    );
    assert!(json(&Path::new(&plain).join("sidrec.json"))
        .get("prompt_tokens")
        .is_none());
    // The same BPE and SID ids, plus the 9 tokens as single special tokens at the end.
    let with = Checkpoint::load(&ck, &Device::Cpu, None).unwrap();
    let without = Checkpoint::load(&plain, &Device::Cpu, None).unwrap();
    assert_eq!(with.meta.prompt_tokens, all);
    assert!(without.meta.prompt_tokens.is_empty());
    assert_eq!(
        with.tokenizer.vocab_size(),
        without.tokenizer.vocab_size() + 9
    );
    for (_, sid) in with.index.iter().take(5) {
        let s = sid.to_string();
        assert_eq!(
            with.tokenizer.encode_text(&s).unwrap(),
            without.tokenizer.encode_text(&s).unwrap()
        );
    }
    for t in all.token_strings() {
        let id = with.tokenizer.inner().token_to_id(t).unwrap();
        assert!(id as usize >= without.tokenizer.vocab_size(), "{t}");
    }
    // Every item's type is in the checkpoint's item table, some of each kind.
    let types: Vec<&str> = with
        .items
        .values()
        .map(|m| m.extra[ITEM_TYPE_FIELD].as_str().unwrap())
        .collect();
    assert!(types.contains(&"I") && types.contains(&"O"), "{types:?}");

    let sft = p("sft");
    ok(&[
        "sft",
        "--init",
        &ck,
        "--data",
        &data,
        "--out",
        &sft,
        "--tasks",
        "seqrec",
        "--history-loss",
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--eval-every",
        "4",
        "--valid-rows",
        "8",
        "--valid-beams",
        "4",
    ]);
    let last = Path::new(&sft).join("last");
    assert_eq!(
        json(&last.join("sidrec.json"))["prompt_tokens"],
        serde_json::json!(["user", "context", "item-type"]),
        "sft keeps the groups"
    );

    let ev = p("eval");
    ok(&[
        "eval",
        "--checkpoint",
        last.to_str().unwrap(),
        "--data",
        &data,
        "--limit",
        "12",
        "--num-beams",
        "4",
        "--out",
        &ev,
    ]);
    let preds = json(&Path::new(&ev).join("predictions.json"));
    let preds = preds.as_array().unwrap();
    assert_eq!(preds.len(), 12);

    // The server's prompt for each row equals eval's: same tokens, same segment.
    let engine = Engine::load(&last, "t", &Device::Cpu, None).unwrap();
    let ds = DatasetDir::discover(&data).unwrap();
    let rows = ds.read_split(Split::Test).unwrap();
    let contexts = RowContexts::load(&all, &ds.root).unwrap();
    for (row, pred) in rows.iter().zip(preds) {
        let input = pred["input"].as_str().unwrap();
        assert!(input.starts_with("[USER_"), "{input}");
        assert!(input.contains("[CTX_HOMEPAGE] history: ["), "{input}");
        let want: Vec<u32> = serde_json::from_value(pred["prompt_ids"].clone()).unwrap();
        let served = engine
            .encode_items(&row.history_item_id, 50, &contexts.of(row))
            .unwrap();
        assert_eq!(served, want, "row of user {}", row.user_id);
    }
    let report = json(&Path::new(&ev).join("report.json"));
    assert_eq!(report["metrics"]["invalid"], 0);
}
