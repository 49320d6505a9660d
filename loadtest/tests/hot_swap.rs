//! Hot swaps under load against the real server binary: a tiny random-weight checkpoint is
//! served, and the hot-swap action publishes new ones through the model directory and through
//! `/admin/reload` in turn while requests flow; none may fail, and the new versions must answer.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use sidrec_loadtest::actions::SwapTarget;
use sidrec_loadtest::run::{self, RunContext};
use sidrec_loadtest::scenario::Scenario;

/// The server binary built beside this test (`cargo test --workspace` builds it).
fn server_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let bin = dir.join(format!("sidrec-server{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

/// A tiny random-weight checkpoint of the fixture catalogue, written as the trainer does.
fn write_checkpoint(dir: &Path) -> String {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use sidrec::checkpoint::{self, NewCheckpoint};
    use sidrec::data::{ItemMeta, Items};
    use sidrec::model::{Qwen2, Qwen2Config, TokenIds};
    use sidrec::prompt::{self, PromptStyle};
    use sidrec::tokenizer::SidTokenizer;
    use sidrec::SidIndex;

    let mut index = SidIndex::new();
    let mut items = Items::new();
    for id in 0..common::ITEMS {
        items.insert(id, ItemMeta::new(format!("Widget model {id} steel"), ""));
        index.insert(id, common::sid(id));
    }
    let sids: Vec<String> = (0..common::ITEMS)
        .map(|i| common::sid(i).to_string())
        .collect();
    let corpus: Vec<String> = sids
        .iter()
        .zip(sids.iter().rev())
        .map(|(a, b)| {
            let p = prompt::sft_seqrec(PromptStyle::Compact, &[a.as_str()], b);
            p.text() + &p.response
        })
        .collect();
    let tokenizer = SidTokenizer::train_bpe(corpus.iter(), 300, &index).unwrap();
    let mut cfg = Qwen2Config::tiny(tokenizer.vocab_size());
    cfg.max_position_embeddings = 1024;
    cfg.bos_token_id = Some(tokenizer.eos_id());
    cfg.eos_token_id = Some(TokenIds::One(tokenizer.eos_id()));
    let varmap = VarMap::new();
    let model = Qwen2::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    checkpoint::write(
        dir,
        &NewCheckpoint {
            model: &model,
            tokenizer: &tokenizer,
            index: &index,
            items: &items,
            prompt_style: PromptStyle::Compact,
            stage: "init",
            collision_policy: "as-indexed",
            data_fingerprint: None,
            metrics: serde_json::json!({}),
            score_mode: None,
            prompt_tokens: Default::default(),
            max_history: None,
            item_window: None,
            extra_files: Vec::new(),
        },
    )
    .unwrap()
    .version
}

const HOT_SWAP: &str = r#"
name = "hot-swap-test"
[load]
arrivals = "poisson"
rate = 6
warmup = "1s"
duration = "7s"
timeout = "20s"
[mix]
recommend = 3
lookup = 1
k = 3
num_beams = 5
exclude = 2
exclude_history = 0.5
[hot_swap]
every = "2s"
via = "alternate"
[expect]
max_failed = 0
max_invalid = 0
min_versions = 3
min_swaps = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_swapped_in_under_load_through_both_paths_lose_nothing() {
    let Some(bin) = server_binary() else {
        sidrec::testing::skip(
            "sidrec-server is not built beside the tests (cargo build -p sidrec-server)",
        );
        return;
    };
    let data = tempfile::tempdir().unwrap();
    common::write_dataset(data.path());
    let models = tempfile::tempdir().unwrap();
    let first = write_checkpoint(&models.path().join("base"));
    let mut child = std::process::Command::new(bin)
        .args([
            "--model-dir",
            models.path().to_str().unwrap(),
            "--port",
            "0",
        ])
        .args([
            "--watch-interval",
            "1s",
            "--admin-token",
            "s3cret",
            "--log-level",
            "info",
        ])
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let ctx = RunContext {
        url: format!("http://{addr}"),
        allow_remote: false,
        data: data.path().to_path_buf(),
        split: sidrec::data::Split::Test,
        knee: None,
        duration: None,
        swap: Some(SwapTarget {
            model_dir: models.path().to_path_buf(),
            source: models.path().join("base"),
            admin_token: Some("s3cret".into()),
        }),
        progress: false,
        scenario_file: None,
    };
    let result = run::run(&Scenario::parse(HOT_SWAP).unwrap(), &ctx).await;
    let _ = child.kill();
    let _ = child.wait();
    let r = result.unwrap();
    let p = &r.phases[0];
    assert!(r.passed(), "{r}\n{:?}", r.actions);
    assert_eq!(p.counts.failed() + p.counts.invalid, 0, "{r}");
    let swaps: Vec<_> = r.actions.iter().filter(|a| a.kind == "swap").collect();
    assert_eq!(swaps.len(), 3, "at 2, 4 and 6 s: {swaps:?}");
    assert!(swaps.iter().all(|s| s.ok), "{swaps:?}");
    assert!(swaps[0].what.contains("model directory") && swaps[1].what.contains("/admin/reload"));
    let versions = r.versions();
    assert!(versions.contains_key(&first), "{versions:?}");
    for s in swaps.iter().take(2) {
        assert!(
            versions.contains_key(s.version.as_ref().unwrap()),
            "{versions:?} {s:?}"
        );
    }
}
