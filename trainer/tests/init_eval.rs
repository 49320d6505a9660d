//! `init` + `eval` end to end on a small synthetic dataset, and checkpoint integrity checks.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use common::read_json;
use sidrec::checkpoint::Checkpoint;

const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn setup(dir: &Path) -> (String, String) {
    let data = dir.join("data");
    let ck = dir.join("ck");
    let (data, ck) = (
        data.to_str().unwrap().to_string(),
        ck.to_str().unwrap().to_string(),
    );
    ok(&[
        "data", "synth", "--items", "300", "--users", "300", "--seed", "3", "--out", &data,
    ]);
    ok(&["init", "--data", &data, "--out", &ck, "--vocab-size", "600"]);
    (data, ck)
}

#[test]
fn init_takes_the_depth_and_mlp_width_over_the_preset() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let wide = dir.path().join("wide").to_str().unwrap().to_string();
    let args = [
        "init",
        "--data",
        &data,
        "--out",
        &wide,
        "--vocab-size",
        "600",
    ];
    ok(&[&args[..], &["--layers", "2", "--intermediate-size", "96"]].concat());
    let config = |ck: &str| read_json(&Path::new(ck).join("config.json"));
    let (tiny, w) = (config(&ck), config(&wide));
    assert_eq!(tiny["num_hidden_layers"], 4);
    assert_eq!(tiny["intermediate_size"], 512);
    assert_eq!(w["num_hidden_layers"], 2);
    assert_eq!(w["intermediate_size"], 96);
    assert_eq!(w["hidden_size"], tiny["hidden_size"]);
    let loaded = Checkpoint::load(&wide, &Device::Cpu, None).unwrap();
    assert_eq!(loaded.model.config().num_hidden_layers, 2);
    let ev = dir.path().join("ev").to_str().unwrap().to_string();
    ok(&[
        "eval",
        "--checkpoint",
        &wide,
        "--data",
        &data,
        "--limit",
        "3",
        "--num-beams",
        "5",
        "--out",
        &ev,
    ]);
    let o = run(&[&args[..], &["--layers", "0"]].concat());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--layers must be at least 1"));
}

/// A fresh model's weights depend on `init --seed` only: the same seed twice gives the same
/// bytes, another seed other weights (with the same tokenizer).
#[test]
fn init_weights_depend_on_the_seed_only() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let again = dir.path().join("again").to_str().unwrap().to_string();
    let other = dir.path().join("other").to_str().unwrap().to_string();
    let init = |out: &str, seed: &str| {
        ok(&[
            "init",
            "--data",
            &data,
            "--out",
            out,
            "--vocab-size",
            "600",
            "--seed",
            seed,
        ]);
    };
    init(&again, "42");
    init(&other, "7");
    let bytes = |ck: &str, f: &str| std::fs::read(Path::new(ck).join(f)).unwrap();
    assert_eq!(
        bytes(&ck, "tokenizer.json"),
        bytes(&other, "tokenizer.json")
    );
    assert!(bytes(&ck, "model.safetensors") == bytes(&again, "model.safetensors"));
    assert!(bytes(&ck, "model.safetensors") != bytes(&other, "model.safetensors"));
}

#[test]
fn eval_reports_metrics_and_reference_shaped_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let out = dir.path().join("eval");
    let stdout = ok(&[
        "eval",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--limit",
        "25",
        "--num-beams",
        "12",
        "--batch-size",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("HR@K"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"], 25);
    assert_eq!(
        report["metrics"]["invalid"], 0,
        "constrained decoding never leaves the catalogue"
    );
    assert_eq!(report["metrics"]["ks"], serde_json::json!([1, 3, 5, 10]));
    let preds: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("predictions.json")).unwrap()).unwrap();
    assert_eq!(preds.len(), 25);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&ck).join("sid_index.json")).unwrap())
            .unwrap();
    let sids: std::collections::HashSet<String> = index
        .as_object()
        .unwrap()
        .values()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect()
        })
        .collect();
    for p in &preds {
        let list = p["predict"].as_array().unwrap();
        assert_eq!(list.len(), 12);
        let distinct: std::collections::HashSet<&str> =
            list.iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(distinct.len(), 12, "beams are distinct SIDs");
        assert!(distinct.iter().all(|s| sids.contains(*s)));
        assert!(p["output"].as_str().unwrap().ends_with('\n'));
        assert!(p["input"].as_str().unwrap().starts_with("history: "));
    }
    // Batch size does not change the results.
    let out1 = dir.path().join("eval1");
    ok(&[
        "eval",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--limit",
        "25",
        "--num-beams",
        "12",
        "--batch-size",
        "1",
        "--out",
        out1.to_str().unwrap(),
    ]);
    let p1: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out1.join("predictions.json")).unwrap()).unwrap();
    let same = preds
        .iter()
        .zip(&p1)
        .filter(|(a, b)| a["predict"] == b["predict"])
        .count();
    assert!(
        same >= 24,
        "only {same}/25 rows identical across batch sizes"
    );
}

#[test]
fn the_server_encodes_a_history_exactly_as_eval_does() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let out = dir.path().join("eval");
    ok(&[
        "eval",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--limit",
        "60",
        "--num-beams",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let preds = read_json(&out.join("predictions.json"));
    let engine = sidrec_server::engine::Engine::load(
        Path::new(&ck),
        "ck",
        &Device::Cpu,
        Some(sidrec::decode::ScoreMode::Exact),
    )
    .unwrap();
    let max_history = sidrec_server::ServerOptions::default().max_history;
    let ctx = sidrec::prompt::PromptContext::default();
    let rows = preds.as_array().unwrap();
    assert_eq!(rows.len(), 60);
    for row in rows {
        let history: Vec<u32> = serde_json::from_value(row["history"].clone()).unwrap();
        let eval_ids: Vec<u32> = serde_json::from_value(row["prompt_ids"].clone()).unwrap();
        assert!(history.len() <= max_history, "{history:?}");
        // `history` (item ids) and `history_sids` requests both encode to eval's prompt.
        assert_eq!(
            engine.encode_items(&history, max_history, &ctx).unwrap(),
            eval_ids
        );
        let sids: Vec<sidrec::Sid> = history
            .iter()
            .map(|&i| engine.catalogue.catalogue.get(i).unwrap().sid.clone())
            .collect();
        assert_eq!(engine.encode(&sids, max_history, &ctx).unwrap(), eval_ids);
    }
    // An item outside the checkpoint's index is refused, not dropped.
    let e = engine
        .encode_items(&[u32::MAX], max_history, &ctx)
        .unwrap_err();
    assert!(
        matches!(e, sidrec::Error::NoSid(id) if id == u32::MAX),
        "{e}"
    );
}

#[test]
fn compare_pairs_generative_seeds_with_baselines_in_item_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    // A second, differently initialised checkpoint stands for a second seed.
    let ck2 = dir.path().join("ck2").to_str().unwrap().to_string();
    ok(&[
        "init",
        "--data",
        &data,
        "--out",
        &ck2,
        "--vocab-size",
        "600",
    ]);
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let common: [&str; 6] = ["--data", &data, "--limit", "30", "--num-beams", "10"];
    for (c, o) in [(&ck, "g1"), (&ck2, "g2")] {
        let mut a: Vec<&str> = vec!["eval", "--checkpoint", c, "--out"];
        let o = out(o);
        a.push(&o);
        a.extend(common);
        ok(&a);
    }
    for (kind, o) in [("transition", "tr"), ("popularity", "pop")] {
        let o = out(o);
        let mut a: Vec<&str> = vec!["eval", "--baseline", kind, "--out", &o];
        a.extend(common);
        ok(&a);
    }
    let json = out("cmp.json");
    let g = format!("{},{}", out("g1"), out("g2"));
    let stdout = ok(&[
        "compare",
        "--a",
        &out("tr"),
        "--b",
        &g,
        "--ks",
        "1,10",
        "--resamples",
        "500",
        "--json",
        &json,
    ]);
    assert!(
        stdout.contains("B (2 runs)") && stdout.contains("Run against run"),
        "{stdout}"
    );
    let c = read_json(Path::new(&json));
    assert_eq!(
        (c["rows"].as_u64(), c["by_items"].as_bool()),
        (Some(30), Some(true))
    );
    assert_eq!(c["pairs"].as_array().unwrap().len(), 2);
    // Each side's HR@10 is what the evals themselves report (generative: mean over the seeds).
    let hr10 = |d: &str| {
        read_json(&Path::new(&out(d)).join("report.json"))["metrics"]["hr"]["10"]
            .as_f64()
            .unwrap()
    };
    let m = c["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "HR@10")
        .unwrap();
    assert!((m["a"].as_f64().unwrap() - hr10("tr")).abs() < 1e-9, "{m}");
    let gen_mean = (hr10("g1") + hr10("g2")) / 2.0;
    assert!((m["b"].as_f64().unwrap() - gen_mean).abs() < 1e-9, "{m}");
    assert_eq!(m["test"], "bootstrap");

    // Two baselines: one run each, the paired sign-flip test.
    let stdout = ok(&[
        "compare",
        "--a",
        &out("tr"),
        "--b",
        &out("pop"),
        "--ks",
        "10",
    ]);
    assert!(
        stdout.contains("sign-flip") && !stdout.contains("Run against run"),
        "{stdout}"
    );

    // Other rows are refused, naming the first row that differs.
    let o = out("tr-valid");
    let mut a: Vec<&str> = vec![
        "eval",
        "--baseline",
        "transition",
        "--split",
        "valid",
        "--out",
        &o,
    ];
    a.extend(common);
    ok(&a);
    let e = run(&["compare", "--a", &o, "--b", &g]);
    assert!(!e.status.success());
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(err.contains("row 0") && err.contains("same rows"), "{err}");
}

#[test]
fn checkpoints_reload_identically_and_corruption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let a = Checkpoint::load(&ck, &Device::Cpu, None).unwrap();
    let b = Checkpoint::load(&ck, &Device::Cpu, None).unwrap();
    assert_eq!(a.meta.stage, "init");
    let ids = Tensor::new(&[[1u32, 5, 9, 3]], &Device::Cpu).unwrap();
    let la = a
        .model
        .forward_train(&ids, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let lb = b
        .model
        .forward_train(&ids, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(la, lb);

    // Flip one byte of the weights: the sha256 check refuses the checkpoint.
    let weights = Path::new(&ck).join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&weights, &bytes).unwrap();
    let o = run(&["eval", "--checkpoint", &ck, "--data", &data, "--limit", "2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sha256 mismatch"));

    // Without sidrec.json the directory is not a checkpoint.
    std::fs::remove_file(Path::new(&ck).join("sidrec.json")).unwrap();
    let o = run(&["eval", "--checkpoint", &ck, "--data", &data]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a complete sidrec checkpoint"));
}

#[test]
fn init_from_a_hf_base_extends_the_tokenizer_and_keeps_the_old_weights() {
    let dir = tempfile::tempdir().unwrap();
    // The base: a from-scratch checkpoint is a HF Qwen2 directory (config, safetensors, tokenizer).
    let (_, base) = setup(dir.path());
    // A larger catalogue has SID tokens the base tokenizer lacks.
    let data2 = dir.path().join("data2").to_str().unwrap().to_string();
    ok(&[
        "data", "synth", "--items", "2500", "--users", "300", "--seed", "4", "--out", &data2,
    ]);
    let out = dir.path().join("based").to_str().unwrap().to_string();
    ok(&[
        "init",
        "--data",
        &data2,
        "--out",
        &out,
        "--base",
        &base,
        "--prompt-style",
        "minionerec",
    ]);
    let a = Checkpoint::load(&base, &Device::Cpu, None).unwrap();
    let b = Checkpoint::load(&out, &Device::Cpu, None).unwrap();
    let (va, vb) = (a.tokenizer.vocab_size(), b.tokenizer.vocab_size());
    assert!(vb > va, "no SID tokens were added ({va} -> {vb})");
    assert_eq!(b.model.config().vocab_size, vb);
    // Old rows are kept, new rows start at the mean of the old ones.
    let ea = a.model.embed_weight().to_vec2::<f32>().unwrap();
    let eb = b.model.embed_weight().to_vec2::<f32>().unwrap();
    assert_eq!(&eb[..va], &ea[..]);
    let h = ea[0].len();
    let mean: Vec<f32> = (0..h)
        .map(|j| ea.iter().map(|r| r[j]).sum::<f32>() / va as f32)
        .collect();
    for row in &eb[va..] {
        for (x, m) in row.iter().zip(&mean) {
            assert!((x - m).abs() < 1e-6);
        }
    }
    // Old tokens give the same hidden states through the unchanged layers.
    let ids = Tensor::new(&[[1u32, 5, 9, 3]], &Device::Cpu).unwrap();
    let ha = a
        .model
        .forward_hidden(&ids, None, sidrec::model::Mode::Infer)
        .unwrap();
    let hb = b
        .model
        .forward_hidden(&ids, None, sidrec::model::Mode::Infer)
        .unwrap();
    let d: f32 = (ha - hb)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(d, 0.0);
    assert_eq!(b.meta.prompt_style.to_string(), "minionerec");
}

/// A directory with room for `bytes` only: a tmpfs of that size mounted on it, unmounted on
/// drop. `None` where this process may not mount (not root, or a container without the right).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }

    /// Make room for `bytes` in all (the files stay).
    fn grow(&self, bytes: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn a_full_disk_during_a_save_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (data, probe) = setup(dir.path());
    let size = dir_bytes(Path::new(&probe));
    let weights = std::fs::metadata(Path::new(&probe).join("model.safetensors"))
        .unwrap()
        .len();
    // Room for one checkpoint and a half: the first save fits, a second copy (a checkpoint is
    // built beside the one it replaces) runs out of space. Where no filesystem can be mounted,
    // a file-size limit makes the weights' write fail the same way (EFBIG instead of ENOSPC).
    let models = dir.path().join("models");
    let disk = SmallDisk::mount(&models, size + size / 2);
    std::fs::create_dir_all(&models).unwrap();
    let ck = models.join("ck");
    let ck_s = ck.to_str().unwrap();
    let init = [
        "init",
        "--data",
        &data,
        "--out",
        ck_s,
        "--vocab-size",
        "600",
    ];
    ok(&init);
    let before = Checkpoint::load(&ck, &Device::Cpu, None).unwrap().meta;
    let o = if disk.is_some() {
        run(&init)
    } else {
        eprintln!("tmpfs not mountable here: a file-size limit stands in for the full disk");
        // The shell's `ulimit -f` counts 512- or 1024-byte blocks: either way the limit is at
        // most half the weights file. SIGXFSZ is ignored so the write fails with EFBIG.
        Command::new("sh")
            .arg("-c")
            .arg(r#"trap '' XFSZ; ulimit -f "$1"; shift; exec "$@""#)
            .arg("sh")
            .arg((weights / 2048).to_string())
            .arg(env!("CARGO_BIN_EXE_sidrec-trainer"))
            .args(init)
            .output()
            .unwrap()
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    // An I/O error (exit status 3) naming the file that could not be written and why.
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("model.safetensors"), "{stderr}");
    let why = if disk.is_some() {
        "No space left on device"
    } else {
        "File too large"
    };
    assert!(stderr.contains(why), "{stderr}");
    // The previous checkpoint is whole (its hashes verify) and unchanged; nothing is left of the
    // failed save, so a server watching `models` has only complete checkpoints to choose from.
    let after = Checkpoint::load(&ck, &Device::Cpu, None).unwrap().meta;
    assert_eq!(after, before);
    let left: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["ck"]);
    let files: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with('.'))
        .collect();
    assert!(files.is_empty(), "{files:?}");
    // With space again, the same save replaces it.
    if let Some(disk) = &disk {
        disk.grow(3 * size);
    }
    // A version is the save's second and its files' digest, and `init` writes the same files:
    // a save within the same second as the first would carry the same version.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(&init);
    let replaced = Checkpoint::load(&ck, &Device::Cpu, None).unwrap().meta;
    assert_ne!(replaced.version, before.version);
}
