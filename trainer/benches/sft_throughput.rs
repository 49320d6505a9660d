//! SFT throughput: tokens/s of the forward pass, forward + backward, and a whole optimizer step,
//! for the `tiny` and `small` presets on Industrial SID-history prompts.
//!
//! `cargo bench -p sidrec-trainer --bench sft_throughput -- [--presets tiny,base,small]
//! [--batch 32] [--steps 10] [--history-loss] [--style compact|minionerec]
//! [--kernels fused|composite] [--export DIR] [--lr 1e-3]`
//! Needs `../shared/data/industrial` (or `SIDREC_BENCH_DATA=DIR`). Threads: `RAYON_NUM_THREADS`.
//!
//! `--kernels composite` runs the model's plain tensor-op forms instead of the fused CPU
//! kernels (the A/B of the two in one binary). `--export DIR` writes, per preset, the initial
//! weights as a HuggingFace checkpoint (`DIR/<preset>/checkpoint`), every batch's token ids,
//! mask, supervised positions and targets (`batches.jsonl`) and this run's per-step losses
//! (`sidrec-losses.json`), so that `scripts/torch_reference/` can train PyTorch on exactly
//! the same batches from the same weights.

use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use sidrec::data::{DatasetDir, Split};
use sidrec::model::{Mode, Qwen2};
use sidrec::prompt::{PromptEncoder, PromptStyle};
use sidrec::tokenizer::SidTokenizer;
use sidrec_trainer::cli::Preset;
use sidrec_trainer::data::features::RowContexts;
use sidrec_trainer::init::{preset_config, tokenizer_corpus};
use sidrec_trainer::sft::tasks::{Task, TaskBuilder};
use sidrec_trainer::train::batch::{make_batch, Batch, Example};
use sidrec_trainer::train::objective::batch_nll;
use sidrec_trainer::train::optim::{sorted_vars, AdamW, AdamWConfig, GradAccumulator};

struct Opts {
    presets: Vec<Preset>,
    batch: usize,
    steps: usize,
    history_loss: bool,
    style: PromptStyle,
    fused: bool,
    export: Option<std::path::PathBuf>,
    lr: f64,
}

fn parse() -> Opts {
    let mut o = Opts {
        presets: vec![Preset::Tiny, Preset::Small],
        batch: 32,
        steps: 10,
        history_loss: false,
        style: PromptStyle::Compact,
        fused: true,
        export: None,
        lr: 1e-3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--presets" => {
                o.presets = val()
                    .split(',')
                    .map(|p| match p {
                        "tiny" => Preset::Tiny,
                        "base" => Preset::Base,
                        "small" => Preset::Small,
                        other => panic!("unknown preset {other}"),
                    })
                    .collect();
                i += 1;
            }
            "--batch" => {
                o.batch = val().parse().expect("--batch N");
                i += 1;
            }
            "--steps" => {
                o.steps = val().parse().expect("--steps N");
                i += 1;
            }
            "--style" => {
                o.style = val().parse().expect("--style compact|minionerec");
                i += 1;
            }
            "--kernels" => {
                o.fused = match val().as_str() {
                    "fused" => true,
                    "composite" => false,
                    other => panic!("--kernels fused|composite, not {other}"),
                };
                i += 1;
            }
            "--export" => {
                o.export = Some(val().into());
                i += 1;
            }
            "--lr" => {
                o.lr = val().parse().expect("--lr X");
                i += 1;
            }
            "--history-loss" => o.history_loss = true,
            // cargo bench passes --bench; ignore what is not ours.
            _ => {}
        }
        i += 1;
    }
    o
}

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds of this process so far (0 where unknown).
fn cpu_s() -> f64 {
    sidrec::device::cpu_seconds().unwrap_or(0.0)
}

fn main() {
    // As the trainer binary does: heap reuse for tensor buffers, the work on a pool worker
    // (`SIDREC_BENCH_OUTSIDE_POOL=1` runs it on the main thread, for an A/B).
    sidrec::device::tune_allocator();
    if std::env::var("SIDREC_BENCH_OUTSIDE_POOL").is_ok_and(|v| v == "1") {
        bench();
    } else {
        sidrec::device::run_in_pool(bench);
    }
}

fn bench() {
    let o = parse();
    let data = std::env::var("SIDREC_BENCH_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/data/industrial")
        });
    let ds = DatasetDir::discover(&data).expect("dataset (set SIDREC_BENCH_DATA)");
    let index = ds.read_index().unwrap();
    let items = ds.read_items().unwrap();
    let rows = ds.read_split(Split::Train).unwrap();
    let corpus = tokenizer_corpus(o.style, &rows, &items, &index).unwrap();
    let tokenizer = SidTokenizer::train_bpe(corpus.iter(), 2000, &index).unwrap();
    let builder = TaskBuilder {
        prompts: PromptEncoder::new(o.style, &tokenizer, &index),
        items: &items,
        category: "industrial and scientific items".into(),
        cutoff: 512,
        history_loss: o.history_loss,
        covered: None,
        recent_history: 0,
        contexts: &RowContexts::none(),
    };
    let examples: Vec<Example> = builder.build(&rows, &[Task::SeqRec]).unwrap();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!(
        "SFT throughput on {} ({} seqrec examples, style {}, batch {}, history loss {}, threads {threads}, kernels {})",
        data.display(),
        examples.len(),
        o.style,
        o.batch,
        o.history_loss,
        if o.fused { "fused" } else { "composite" }
    );
    println!("| preset | params | tokens/batch | fwd ms | fwd+bwd ms | step ms | fwd tok/s | step tok/s | bwd/fwd | step CPU ms | tok per CPU-s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let device = Device::Cpu;
    for &preset in &o.presets {
        let cfg = preset_config(preset, tokenizer.vocab_size(), tokenizer.eos_id());
        let varmap = VarMap::new();
        let model =
            Qwen2::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device)).unwrap();
        model.set_fused_kernels(o.fused);
        let vars = sorted_vars(&varmap).unwrap();
        let mut opt = AdamW::new(vars.clone(), AdamWConfig::default()).unwrap();
        let batches: Vec<_> = examples
            .chunks(o.batch)
            .take(o.steps + 2)
            .map(|c| {
                let refs: Vec<&Example> = c.iter().collect();
                make_batch(&refs, tokenizer.eos_id(), &device).unwrap()
            })
            .collect();
        let export = o
            .export
            .as_ref()
            .map(|dir| dir.join(format!("{preset:?}").to_lowercase()));
        if let Some(dir) = &export {
            export_batches(dir, &model, &batches);
        }
        let mut losses = Vec::new();
        let (mut fwd, mut fb, mut step, mut tokens, mut cpu) = (0f64, 0f64, 0f64, 0usize, 0f64);
        for (i, b) in batches.iter().enumerate() {
            let warm = i < 2;
            let c0 = cpu_s();
            let t0 = Instant::now();
            let nll = batch_nll(&model, b, Mode::Train).unwrap();
            let _ = nll.to_scalar::<f32>().unwrap();
            let t1 = Instant::now();
            let loss = (&nll / b.supervised.max(1) as f64).unwrap();
            let grads = loss.backward().unwrap();
            let t2 = Instant::now();
            let mut acc = GradAccumulator::default();
            acc.add(&vars, &grads).unwrap();
            opt.step(&mut acc, o.lr, Some(1.0)).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            let t3 = Instant::now();
            if !warm {
                fwd += (t1 - t0).as_secs_f64();
                fb += (t2 - t0).as_secs_f64();
                step += (t3 - t0).as_secs_f64();
                cpu += cpu_s() - c0;
                tokens += b.tokens;
            }
        }
        let n = batches.len().saturating_sub(2).max(1) as f64;
        println!(
            "| {preset:?} | {:.1}M | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
            cfg.num_parameters() as f64 / 1e6,
            tokens as f64 / n,
            fwd / n * 1e3,
            fb / n * 1e3,
            step / n * 1e3,
            tokens as f64 / fwd,
            tokens as f64 / step,
            (fb - fwd) / fwd,
            cpu / n * 1e3,
            tokens as f64 / cpu.max(1e-9),
            vm_hwm_mib()
        );
        if let Some(dir) = &export {
            let text = serde_json::to_string(&losses).unwrap();
            std::fs::write(dir.join("sidrec-losses.json"), text).unwrap();
        }
    }
}

/// The initial weights as a HF checkpoint and every batch as one JSON line.
fn export_batches(dir: &std::path::Path, model: &Qwen2, batches: &[Batch]) {
    std::fs::create_dir_all(dir).unwrap();
    sidrec::model::checkpoint::save(model, &dir.join("checkpoint")).unwrap();
    let mut lines = String::new();
    for b in batches {
        let line = serde_json::json!({
            "ids": b.ids.to_vec2::<u32>().unwrap(),
            "mask": b.mask.to_vec2::<u32>().unwrap(),
            "positions": b.positions.to_vec1::<u32>().unwrap(),
            "targets": b.targets.to_vec1::<u32>().unwrap(),
            "tokens": b.tokens,
            "supervised": b.supervised,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("batches.jsonl"), lines).unwrap();
}
