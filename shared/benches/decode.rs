//! Decode benchmark: trie-constrained beam search throughput, latency and achieved GFLOP/s on
//! this CPU (f32), and how latency changes with the catalogue size.
//!
//! A plain `harness = false` binary with its own timing loop (criterion would take far too long
//! for a 0.5B-shaped model on 2 cores). It prints a Markdown report and writes it, with a JSON
//! copy, under `target/bench-reports/` (`decode.{md,json}`, or `decode-quick.*` with `--quick`).
//!
//! ```text
//! cargo bench -p sidrec --bench decode                 # full run
//! cargo bench -p sidrec --bench decode -- --quick      # a couple of minutes
//! cargo bench -p sidrec --bench decode -- --help       # every option
//! ```
//!
//! # What is measured
//!
//! 1. `Decoder::beam_search` at `--beams` (50) beams, top `--top-k` (10), batch sizes 1/8/32,
//!    both score modes, for (a) `Qwen2Config::tiny(V)` with V = the tokenizer's vocabulary and
//!    (b) a Qwen2.5-0.5B-shaped model (vocab 151936, 24 layers, hidden 896; random weights).
//!    Prompts are MiniOneRec's evaluation prompts (`eval_seqrec(Minionerec, history)`) of the
//!    Industrial *test* rows, in file order, tokenised by a byte-level BPE trained with
//!    `SidTokenizer::train_bpe` on the Industrial prompts. The 0.5B-shaped model reuses the same
//!    token ids: its vocabulary is larger than the tokenizer's, which only means that most of its
//!    rows are never read as inputs (they still take part in exact mode's full-vocabulary
//!    softmax, as they would for the real model). The catalogue is Industrial's 3686 items.
//! 2. Achieved GFLOP/s of the decode (analytic FLOPs, see [`FlopModel`]) beside a plain f32
//!    1024×1024 @ 1024×1024 candle matmul measured in the same run.
//! 3. Latency vs catalogue size (4k / 100k / 1M items, synthetic seeded SIDs: 3 levels × 256
//!    random codes, items whose 3 codes collide get a 4th code), tiny model, batch 8, both modes,
//!    plus `Decoder::new` build time and `DecodeTables::device_bytes()`.
//!
//! Latency is the wall time of one `beam_search` call (prefill + all steps + read-back of the
//! top-K); recommendations/s = prompts decoded / total measured time. p99 is the nearest-rank
//! percentile, i.e. the maximum when fewer than 100 batches are measured.

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sidrec::data::{DatasetDir, Split};
use sidrec::decode::{DecodeRequest, Decoder, ScoreMode, SearchConfig};
use sidrec::model::{Qwen2, Qwen2Config};
use sidrec::prompt::{eval_seqrec, title_to_sid, PromptStyle};
use sidrec::tokenizer::SidTokenizer;
use sidrec::trie::{SidTrie, SidVocab};

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Serialize)]
struct Options {
    quick: bool,
    beams: usize,
    top_k: usize,
    batches: Vec<usize>,
    modes: Vec<String>,
    bpe_vocab: usize,
    /// Tiny model: warm-up batches, then measured batches per batch size.
    tiny_warmup: usize,
    tiny_iters: Vec<(usize, usize)>,
    /// 0.5B-shaped model.
    big: bool,
    big_batches: Vec<usize>,
    big_warmup: Vec<(usize, usize)>,
    big_iters: Vec<(usize, usize)>,
    /// Catalogue-size section.
    catalogue: bool,
    catalogue_sizes: Vec<usize>,
    catalogue_batch: usize,
    catalogue_warmup: usize,
    catalogue_iters: usize,
    matmul_runs: usize,
    tiny: bool,
    out: Option<PathBuf>,
    seed: u64,
    /// `--base`: add the `base` preset beside `tiny`.
    base: bool,
}

impl Options {
    fn full() -> Self {
        Self {
            quick: false,
            beams: 50,
            top_k: 10,
            batches: vec![1, 8, 32],
            modes: vec!["exact".into(), "fast".into()],
            bpe_vocab: 3000,
            tiny_warmup: 2,
            tiny_iters: vec![(1, 40), (8, 12), (32, 5)],
            big: true,
            big_batches: vec![1, 8, 32],
            big_warmup: vec![(1, 1), (8, 1), (32, 0)],
            big_iters: vec![(1, 3), (8, 3), (32, 1)],
            catalogue: true,
            catalogue_sizes: vec![4_000, 100_000, 1_000_000],
            catalogue_batch: 8,
            catalogue_warmup: 1,
            catalogue_iters: 5,
            matmul_runs: 11,
            tiny: true,
            out: None,
            seed: 7,
            base: false,
        }
    }

    fn quick() -> Self {
        Self {
            quick: true,
            tiny_warmup: 1,
            tiny_iters: vec![(1, 10), (8, 4), (32, 2)],
            big_batches: vec![1, 8],
            big_warmup: vec![(1, 1), (8, 0), (32, 0)],
            big_iters: vec![(1, 1), (8, 1), (32, 1)],
            catalogue_iters: 2,
            matmul_runs: 5,
            ..Self::full()
        }
    }

    fn lookup(table: &[(usize, usize)], batch: usize, default: usize) -> usize {
        table
            .iter()
            .find(|(b, _)| *b == batch)
            .map_or(default, |(_, n)| *n)
    }
}

const HELP: &str = "\
decode benchmark: cargo bench -p sidrec --bench decode -- [options]

  --quick                 fewer iterations, 0.5B model at batch 1 and 8 only (a few minutes)
  --beams N               beams per prompt (50)
  --top-k N               hypotheses returned per prompt (10)
  --batches A,B,..        batch sizes for the tiny model (1,8,32)
  --modes exact,fast      score modes to run
  --bpe-vocab N           BPE vocabulary size asked of train_bpe (3000)
  --tiny-warmup N         tiny model warm-up batches per config (2; quick 1)
  --tiny-iters B:N,..     tiny model measured batches per batch size (1:40,8:12,32:5)
  --big-batches A,B,..    batch sizes for the 0.5B-shaped model (1,8,32; quick 1,8)
  --big-warmup B:N,..     0.5B warm-up batches per batch size (1:1,8:1,32:0)
  --big-iters B:N,..      0.5B measured batches per batch size (1:3,8:3,32:1; quick all 1)
  --no-big                skip the 0.5B-shaped model
  --no-tiny               skip the tiny model (section 1a)
  --no-catalogue          skip the catalogue-size section
  --catalogue-sizes A,..  synthetic catalogue sizes (4000,100000,1000000)
  --catalogue-iters N     measured batches per catalogue size and mode (5; quick 2)
  --matmul-runs N         1024^3 matmul repetitions (median reported) (11; quick 5)
  --out DIR               report directory (target/bench-reports)
  --seed N                seed of random weights and synthetic catalogues (7)
  --base                  also run the `base` preset (hidden 384, 6 layers) like the tiny one
";

fn parse_list(v: &str) -> BoxResult<Vec<usize>> {
    Ok(v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()?)
}

fn parse_pairs(v: &str) -> BoxResult<Vec<(usize, usize)>> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (b, n) = s
                .split_once(':')
                .ok_or_else(|| format!("`{s}`: expected BATCH:COUNT"))?;
            Ok((b.trim().parse()?, n.trim().parse()?))
        })
        .collect()
}

fn parse_args() -> BoxResult<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = if args.iter().any(|a| a == "--quick") {
        Options::quick()
    } else {
        Options::full()
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bench" | "--quick" => {} // cargo bench passes --bench to harness = false targets
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--beams" => opts.beams = val()?.parse()?,
            "--top-k" => opts.top_k = val()?.parse()?,
            "--batches" => opts.batches = parse_list(&val()?)?,
            "--modes" => {
                opts.modes = val()?.split(',').map(str::to_string).collect();
                for m in &opts.modes {
                    m.parse::<ScoreMode>()?;
                }
            }
            "--bpe-vocab" => opts.bpe_vocab = val()?.parse()?,
            "--tiny-warmup" => opts.tiny_warmup = val()?.parse()?,
            "--tiny-iters" => opts.tiny_iters = parse_pairs(&val()?)?,
            "--big-batches" => opts.big_batches = parse_list(&val()?)?,
            "--big-warmup" => opts.big_warmup = parse_pairs(&val()?)?,
            "--big-iters" => opts.big_iters = parse_pairs(&val()?)?,
            "--no-big" => opts.big = false,
            "--no-tiny" => opts.tiny = false,
            "--no-catalogue" => opts.catalogue = false,
            "--catalogue-sizes" => opts.catalogue_sizes = parse_list(&val()?)?,
            "--catalogue-iters" => opts.catalogue_iters = val()?.parse()?,
            "--matmul-runs" => opts.matmul_runs = val()?.parse()?,
            "--out" => opts.out = Some(PathBuf::from(val()?)),
            "--seed" => opts.seed = val()?.parse()?,
            "--base" => opts.base = true,
            other => return Err(format!("unknown option `{other}` (see --help)").into()),
        }
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------------------------
// FLOP model

/// Analytic FLOPs of one `beam_search` call (multiply-add = 2 FLOPs; matmuls only).
///
/// With `L` layers, hidden `h`, `H` query heads of width `d`, KV width `kvd = kv_heads·d`, MLP
/// width `I`, vocabulary `V`, `B` prompts left-padded to `P` tokens, `R = B·beams` beam rows:
///
/// - `W = L·(2h² + 2h·kvd + 3h·I)`: the non-embedding matmul weights (biases, norms ignored).
/// - prefill: `2·W·B·P + L·4·B·H·P²·d` (QKᵀ and AV over the full padded `P×P`, as computed).
/// - decode forward for generated token `t = 0..` (keys `P + t + 1`; there are `steps − 1` of
///   them, since the last step's token needs no forward): `2·W·R + L·4·R·H·(P + t + 1)·d`.
/// - scoring at every step `s`: exact `2·h·V·N_s` (full-vocabulary lm_head), fast
///   `2·h·w_s·N_s` with `w_s` the tokens of the SID level at `s` (plus `\n` where SIDs end);
///   `N_0 = B` (all beams of a prompt are still at the root, so each prompt is scored once),
///   `N_s = R` after.
/// - steps: `levels + 2` in exact mode (SID levels, `\n`, EOS), `levels` in fast mode.
///
/// Padding tokens are counted (they are computed); RMSNorm, RoPE, softmax, SiLU, log-sum-exp,
/// sorting and gathers are not (memory-bound, and small beside the matmuls for the 0.5B model).
#[derive(Debug, Clone, Serialize)]
struct FlopModel {
    layers: usize,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    vocab: usize,
    /// `W` above.
    matmul_weights: usize,
    /// Exact-mode scoring width (`V`) is `vocab`; fast-mode width per SID level.
    level_widths: Vec<usize>,
}

impl FlopModel {
    fn new(cfg: &Qwen2Config, trie: &SidTrie) -> Self {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let kvd = cfg.kv_heads() * d;
        let layer = 2 * h * h + 2 * h * kvd + 3 * h * cfg.intermediate_size;
        let level_widths = (0..trie.num_levels())
            .map(|l| {
                let ends = (0..trie.num_nodes(l) as u32).any(|u| trie.is_terminal(l, u));
                trie.level_tokens(l).len() + usize::from(ends)
            })
            .collect();
        Self {
            layers: cfg.num_hidden_layers,
            hidden: h,
            heads: cfg.num_attention_heads,
            head_dim: d,
            vocab: cfg.vocab_size,
            matmul_weights: cfg.num_hidden_layers * layer,
            level_widths,
        }
    }

    fn steps(&self, mode: ScoreMode) -> usize {
        match mode {
            ScoreMode::Exact => self.level_widths.len() + 2,
            ScoreMode::Fast => self.level_widths.len(),
        }
    }

    fn flops(&self, b: usize, p: usize, beams: usize, mode: ScoreMode) -> f64 {
        let (w, l, hd) = (
            self.matmul_weights as f64,
            self.layers as f64,
            (self.heads * self.head_dim) as f64,
        );
        let (b, p, r) = (b as f64, p as f64, (b * beams) as f64);
        let mut f = 2.0 * w * b * p + l * 4.0 * b * hd * p * p;
        let steps = self.steps(mode);
        for t in 0..steps.saturating_sub(1) {
            f += 2.0 * w * r + l * 4.0 * r * hd * (p + t as f64 + 1.0);
        }
        for s in 0..steps {
            let width = match mode {
                ScoreMode::Exact => self.vocab,
                ScoreMode::Fast => self.level_widths[s],
            };
            let scored_rows = if s == 0 { b } else { r };
            f += 2.0 * self.hidden as f64 * width as f64 * scored_rows;
        }
        f
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement

#[derive(Debug, Clone, Serialize)]
struct DecodeRow {
    model: String,
    mode: String,
    batch: usize,
    beams: usize,
    top_k: usize,
    warmup: usize,
    batches: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    recs_per_s: f64,
    prompt_tokens_per_s: f64,
    mean_prompt_tokens: f64,
    mean_padded_len: f64,
    gflop_per_batch: f64,
    gflops: f64,
    pct_of_matmul: f64,
    load_before: String,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Bench<'a> {
    opts: &'a Options,
    prompts: &'a [Vec<u32>],
    matmul_gflops: f64,
}

impl Bench<'_> {
    /// Time `warmup + iters` batches of `batch` consecutive prompts (cycling through the test
    /// rows, each batch a new slice of them).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        label: &str,
        model: &Qwen2,
        decoder: &Decoder,
        flop: &FlopModel,
        mode: ScoreMode,
        batch: usize,
        warmup: usize,
        iters: usize,
    ) -> BoxResult<DecodeRow> {
        let cfg = SearchConfig {
            num_beams: self.opts.beams,
            top_k: self.opts.top_k,
            mode,
        };
        let n = self.prompts.len();
        let load_before = loadavg();
        let mut times = Vec::with_capacity(iters);
        let (mut tokens, mut padded, mut flops) = (0usize, 0usize, 0f64);
        for i in 0..warmup + iters {
            let start = (i * batch) % n;
            let rows: Vec<&Vec<u32>> = (0..batch).map(|j| &self.prompts[(start + j) % n]).collect();
            let reqs: Vec<DecodeRequest<'_>> = rows
                .iter()
                .map(|p| DecodeRequest {
                    prompt: p,
                    exclude: &[],
                })
                .collect();
            let t0 = Instant::now();
            let out = decoder.beam_search(model, black_box(&reqs), &cfg)?;
            let dt = t0.elapsed();
            black_box(&out);
            assert_eq!(out.len(), batch);
            assert!(out.iter().all(|h| h.len() == self.opts.top_k));
            if i >= warmup {
                let p = rows.iter().map(|r| r.len()).max().unwrap_or(0);
                times.push(dt);
                tokens += rows.iter().map(|r| r.len()).sum::<usize>();
                padded += p;
                flops += flop.flops(batch, p, self.opts.beams, mode);
            }
        }
        let total: f64 = times.iter().map(|d| d.as_secs_f64()).sum();
        let mut sorted: Vec<f64> = times.iter().map(|&d| ms(d)).collect();
        sorted.sort_by(f64::total_cmp);
        let gflops = flops / total / 1e9;
        let row = DecodeRow {
            model: label.to_string(),
            mode: mode.to_string(),
            batch,
            beams: self.opts.beams,
            top_k: self.opts.top_k,
            warmup,
            batches: iters,
            p50_ms: percentile(&sorted, 0.5),
            p99_ms: percentile(&sorted, 0.99),
            mean_ms: total * 1e3 / iters as f64,
            recs_per_s: (batch * iters) as f64 / total,
            prompt_tokens_per_s: tokens as f64 / total,
            mean_prompt_tokens: tokens as f64 / (batch * iters) as f64,
            mean_padded_len: padded as f64 / iters as f64,
            gflop_per_batch: flops / iters as f64 / 1e9,
            gflops,
            pct_of_matmul: 100.0 * gflops / self.matmul_gflops,
            load_before,
        };
        eprintln!(
            "  {label} {mode} batch {batch}: {} batches, p50 {:.1} ms, p99 {:.1} ms, {:.2} rec/s, {:.1} GFLOP/s",
            iters, row.p50_ms, row.p99_ms, row.recs_per_s, row.gflops
        );
        Ok(row)
    }
}

/// Median GFLOP/s of an f32 `[n, n] @ [n, n]` candle matmul.
fn matmul_gflops(n: usize, runs: usize, seed: u64) -> BoxResult<(f64, Vec<f64>)> {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mat = || -> BoxResult<Tensor> {
        let v: Vec<f32> = (0..n * n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        Ok(Tensor::from_vec(v, (n, n), &dev)?)
    };
    let (a, b) = (mat()?, mat()?);
    black_box(a.matmul(&b)?); // warm-up
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| -> BoxResult<f64> {
            let t0 = Instant::now();
            black_box(a.matmul(&b)?);
            Ok(t0.elapsed().as_secs_f64())
        })
        .collect::<BoxResult<_>>()?;
    times.sort_by(f64::total_cmp);
    let flops = 2.0 * (n * n * n) as f64;
    let med = percentile(&times, 0.5);
    Ok((flops / med / 1e9, times.iter().map(|t| t * 1e3).collect()))
}

fn varmap_model(cfg: &Qwen2Config) -> BoxResult<(VarMap, Qwen2)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Qwen2::new(cfg, vb)?;
    Ok((varmap, model))
}

#[derive(Debug, Clone, Serialize)]
struct CatalogueRow {
    items: usize,
    distinct_sids: usize,
    levels: usize,
    nodes_per_depth: Vec<usize>,
    vocab: usize,
    decoder_new_ms: f64,
    device_bytes: usize,
    mode: String,
    batch: usize,
    batches: usize,
    p50_ms: f64,
    p99_ms: f64,
    recs_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Setup {
    started_unix: u64,
    machine: String,
    threads: usize,
    /// `candle_core::utils::get_num_threads()` and the `CANDLE_NUM_THREADS` variable.
    candle_threads: usize,
    candle_num_threads_env: Option<String>,
    dataset: String,
    test_rows: usize,
    catalogue_items: usize,
    sid_levels: usize,
    level_widths: Vec<usize>,
    load_at_start: String,
    bpe_vocab_asked: usize,
    tokenizer_vocab: usize,
    bpe_train_texts: usize,
    bpe_train_s: f64,
    prompt_tokens_min: usize,
    prompt_tokens_mean: f64,
    prompt_tokens_max: usize,
    tiny_params: usize,
    big_params: usize,
    big_vocab: usize,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    options: Options,
    setup: Setup,
    matmul_n: usize,
    /// Best of the matmul checks below: the reference the `% of matmul` column uses.
    matmul_gflops: f64,
    /// Median-of-N matmul GFLOP/s measured at the start and after each section (the load of
    /// the shared machine changes during a run).
    matmul_checks: Vec<(String, f64)>,
    matmul_ms: Vec<f64>,
    decode: Vec<DecodeRow>,
    flop_models: Vec<(String, FlopModel)>,
    catalogue: Vec<CatalogueRow>,
    wall_s: f64,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {threads} CPUs, {mem}")
}

// ---------------------------------------------------------------------------------------------
// Markdown

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let o = &r.options;
    let st = &r.setup;
    let _ = writeln!(
        s,
        "## Decode benchmark{}\n",
        if o.quick { " (--quick)" } else { "" }
    );
    let _ = writeln!(
        s,
        "- machine: {}; candle CPU backend, f32, {} threads (`CANDLE_NUM_THREADS`={}); load average (1/5/15 min) at the start {}; wall time of the run {:.0} s",
        st.machine,
        st.candle_threads,
        st.candle_num_threads_env.as_deref().unwrap_or("unset"),
        st.load_at_start,
        r.wall_s
    );
    let _ = writeln!(
        s,
        "- data: `{}` test split ({} rows, prompts in file order), catalogue {} items, {} SID levels (level widths incl. `\\n` where SIDs end: {:?})",
        st.dataset, st.test_rows, st.catalogue_items, st.sid_levels, st.level_widths
    );
    let _ = writeln!(
        s,
        "- prompts: MiniOneRec eval format; byte-level BPE asked for {} tokens → vocab {} (SID tokens and EOS included), trained on {} Industrial prompt texts in {:.1} s; prompt length min/mean/max {}/{:.1}/{} tokens",
        st.bpe_vocab_asked, st.tokenizer_vocab, st.bpe_train_texts, st.bpe_train_s,
        st.prompt_tokens_min, st.prompt_tokens_mean, st.prompt_tokens_max
    );
    let _ = writeln!(
        s,
        "- models (random weights): tiny = `Qwen2Config::tiny({})`, {:.2}M params; qwen0.5b = `qwen2_5_0_5b()` shape (vocab {}, 24 layers, hidden 896), {:.0}M params, f32 — it reuses the tokenizer's ids, which are all < {}",
        st.tokenizer_vocab, st.tiny_params as f64 / 1e6, st.big_vocab, st.big_params as f64 / 1e6, st.tokenizer_vocab
    );
    let _ = writeln!(
        s,
        "- search: {} beams, top-{}, no exclusions; latency = one `beam_search` call; p99 = nearest rank (the max with < 100 batches)",
        o.beams, o.top_k
    );
    let _ = writeln!(
        s,
        "- reference matmul: f32 {n}×{n} @ {n}×{n} candle matmul, median of {} runs, measured at the start and after each section: {} → best **{:.1} GFLOP/s** (the `% of matmul` reference)\n",
        r.matmul_ms.len(),
        r.matmul_checks
            .iter()
            .map(|(l, g)| format!("{l} {g:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.matmul_gflops,
        n = r.matmul_n
    );
    if !r.decode.is_empty() {
        let _ = writeln!(s, "### Throughput and latency (Industrial catalogue)\n");
        let _ = writeln!(
            s,
            "| model | mode | batch | warm-up + measured | p50 ms | p99 ms | rec/s | prompt tok/s | mean padded len | GFLOP/batch | GFLOP/s | % of matmul |"
        );
        let _ = writeln!(
            s,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for d in &r.decode {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} + {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} | {:.2} | {:.1} | {:.0}% |",
                d.model, d.mode, d.batch, d.warmup, d.batches, d.p50_ms, d.p99_ms, d.recs_per_s,
                d.prompt_tokens_per_s, d.mean_padded_len, d.gflop_per_batch, d.gflops, d.pct_of_matmul
            );
        }
        let _ = writeln!(
            s,
            "\nGFLOP/batch is analytic (matmuls only): `W = L·(2h² + 2h·kvd + 3h·I)`; prefill `2·W·B·P + 4·L·B·H·d·P²`; each of the `steps−1` decode forwards `2·W·R + 4·L·R·H·d·(P+t+1)`; scoring at each step `2·h·V·N` (exact) or `2·h·w_level·N` (fast) with `N = B` at step 0 (every beam is at the root) and `R` after; `R = B·beams`, `P` = padded prompt length, steps = levels+2 (exact) or levels (fast). Padding is counted; norms, RoPE, softmax, SiLU, sorting and gathers are not.\n"
        );
    }
    if !r.catalogue.is_empty() {
        let _ = writeln!(
            s,
            "### Latency vs catalogue size (tiny model, synthetic SIDs)\n"
        );
        let _ = writeln!(
            s,
            "| items | distinct SIDs | levels | nodes per depth | vocab | `Decoder::new` ms | `device_bytes()` | mode | batch | batches | p50 ms | p99 ms | rec/s |"
        );
        let _ = writeln!(
            s,
            "|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"
        );
        for c in &r.catalogue {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:?} | {} | {:.1} | {} ({:.1} MiB) | {} | {} | {} | {:.1} | {:.1} | {:.2} |",
                c.items, c.distinct_sids, c.levels, c.nodes_per_depth, c.vocab, c.decoder_new_ms,
                c.device_bytes, c.device_bytes as f64 / (1024.0 * 1024.0), c.mode, c.batch,
                c.batches, c.p50_ms, c.p99_ms, c.recs_per_s
            );
        }
        let _ = writeln!(
            s,
            "\nSynthetic SIDs: 3 levels × 256 seeded random codes, items whose 3 codes collide get a 4th code; SID tokens numbered after the BPE vocabulary; same prompts as above.\n"
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------

fn main() -> BoxResult<()> {
    let opts = parse_args()?;
    let wall = Instant::now();
    let load_at_start = loadavg();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Some(dir) = sidrec::testing::industrial_dir() else {
        return Err("the Industrial dataset is required (set SIDREC_SHARED_DIR)".into());
    };
    let ds = DatasetDir::discover(&dir)?;
    let index = ds.read_index()?;
    let items = ds.read_items()?;
    let test = ds.read_split(Split::Test)?;

    // Tokenizer: a byte-level BPE trained on the Industrial prompts — the evaluation prompts of
    // every split and the title→SID alignment prompts of every item (which bring the titles'
    // words; the evaluation prompts alone are a fixed template around SID tokens).
    eprintln!("training the BPE tokenizer ...");
    let mut texts: Vec<String> = Vec::new();
    for split in [Split::Train, Split::Valid, Split::Test] {
        for row in ds.read_split(split)? {
            texts.push(eval_seqrec(PromptStyle::Minionerec, &row.history_item_sid).text());
        }
    }
    for (id, meta) in &items {
        if let Some(sid) = index.get(*id) {
            let p = title_to_sid(PromptStyle::Minionerec, &meta.title, &sid.to_string());
            texts.push(format!("{}{}", p.text(), p.response));
        }
    }
    let t0 = Instant::now();
    let tok = SidTokenizer::train_bpe(texts.iter(), opts.bpe_vocab, &index)?;
    let bpe_train_s = t0.elapsed().as_secs_f64();
    let prompts: Vec<Vec<u32>> = test
        .iter()
        .map(|row| tok.encode_prompt(&eval_seqrec(PromptStyle::Minionerec, &row.history_item_sid)))
        .collect::<sidrec::Result<_>>()?;
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let vocab = tok.vocab_size();
    let index = Arc::new(index);
    let decoder = Decoder::new(
        index.clone(),
        tok.sid_vocab().clone(),
        tok.newline_id(),
        tok.eos_id(),
        &Device::Cpu,
    )?;

    eprintln!("reference matmul ...");
    let n = 1024;
    let (mm_gflops, mm_ms) = matmul_gflops(n, opts.matmul_runs, opts.seed)?;
    eprintln!("  {n}^3 f32 matmul: {mm_gflops:.1} GFLOP/s");
    let mut matmul_checks = vec![("start".to_string(), mm_gflops)];
    let check = |label: &str, checks: &mut Vec<(String, f64)>| -> BoxResult<()> {
        let (g, _) = matmul_gflops(n, opts.matmul_runs, opts.seed)?;
        eprintln!("  {n}^3 f32 matmul after {label}: {g:.1} GFLOP/s");
        checks.push((format!("after {label}"), g));
        Ok(())
    };

    let tiny_cfg = Qwen2Config::tiny(vocab);
    let big_cfg = Qwen2Config::qwen2_5_0_5b();
    let tiny_flop = FlopModel::new(&tiny_cfg, decoder.trie());
    let setup = Setup {
        started_unix,
        machine: machine(),
        threads: std::thread::available_parallelism().map_or(0, |n| n.get()),
        candle_threads: candle_core::utils::get_num_threads(),
        candle_num_threads_env: std::env::var("CANDLE_NUM_THREADS").ok(),
        dataset: dir.display().to_string(),
        test_rows: test.len(),
        catalogue_items: index.len(),
        sid_levels: decoder.trie().num_levels(),
        level_widths: tiny_flop.level_widths.clone(),
        load_at_start: load_at_start.clone(),
        bpe_vocab_asked: opts.bpe_vocab,
        tokenizer_vocab: vocab,
        bpe_train_texts: texts.len(),
        bpe_train_s,
        prompt_tokens_min: lens.iter().copied().min().unwrap_or(0),
        prompt_tokens_mean: lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64,
        prompt_tokens_max: lens.iter().copied().max().unwrap_or(0),
        tiny_params: tiny_cfg.num_parameters(),
        big_params: big_cfg.num_parameters(),
        big_vocab: big_cfg.vocab_size,
    };
    drop(texts);

    let bench = Bench {
        opts: &opts,
        prompts: &prompts,
        matmul_gflops: mm_gflops,
    };
    let modes: Vec<ScoreMode> = opts
        .modes
        .iter()
        .map(|m| m.parse())
        .collect::<sidrec::Result<_>>()?;
    let mut decode_rows = Vec::new();
    let mut flop_models = vec![("tiny".to_string(), tiny_flop.clone())];

    if opts.tiny {
        eprintln!("tiny model (vocab {vocab}) ...");
        let (_vm, tiny) = varmap_model(&tiny_cfg)?;
        for &mode in &modes {
            for &b in &opts.batches {
                let iters = Options::lookup(&opts.tiny_iters, b, 5);
                decode_rows.push(bench.run(
                    "tiny",
                    &tiny,
                    &decoder,
                    &tiny_flop,
                    mode,
                    b,
                    opts.tiny_warmup,
                    iters,
                )?);
            }
        }
        check("tiny", &mut matmul_checks)?;
    }
    if opts.base {
        let base_cfg = Qwen2Config::base(vocab);
        let base_flop = FlopModel::new(&base_cfg, decoder.trie());
        flop_models.push(("base".to_string(), base_flop.clone()));
        eprintln!("base model (vocab {vocab}) ...");
        let (_vm, base) = varmap_model(&base_cfg)?;
        for &mode in &modes {
            for &b in &opts.batches {
                let iters = Options::lookup(&opts.tiny_iters, b, 5);
                decode_rows.push(bench.run(
                    "base",
                    &base,
                    &decoder,
                    &base_flop,
                    mode,
                    b,
                    opts.tiny_warmup,
                    iters,
                )?);
            }
        }
        check("base", &mut matmul_checks)?;
    }

    if opts.big {
        eprintln!("building the Qwen2.5-0.5B-shaped model (random f32 weights) ...");
        let t0 = Instant::now();
        let (_vm, big) = varmap_model(&big_cfg)?;
        eprintln!("  built in {:.1} s", t0.elapsed().as_secs_f64());
        let big_flop = FlopModel::new(&big_cfg, decoder.trie());
        flop_models.push(("qwen0.5b".to_string(), big_flop.clone()));
        for &mode in &modes {
            for &b in &opts.big_batches {
                let warmup = Options::lookup(&opts.big_warmup, b, 0);
                let iters = Options::lookup(&opts.big_iters, b, 1);
                decode_rows.push(bench.run(
                    "qwen0.5b", &big, &decoder, &big_flop, mode, b, warmup, iters,
                )?);
            }
        }
        check("qwen0.5b", &mut matmul_checks)?;
    }

    let mut cat_rows = Vec::new();
    if opts.catalogue {
        for &size in &opts.catalogue_sizes {
            eprintln!("synthetic catalogue of {size} items ...");
            let syn = common::synthetic_index(size, &mut ChaCha8Rng::seed_from_u64(opts.seed));
            let svocab = SidVocab::sequential(&syn, vocab as u32)?;
            let cvocab = vocab + svocab.len();
            let syn = Arc::new(syn);
            let t0 = Instant::now();
            let sdec = Decoder::new(
                syn.clone(),
                svocab,
                tok.newline_id(),
                tok.eos_id(),
                &Device::Cpu,
            )?;
            let build_ms = ms(t0.elapsed());
            let trie = sdec.trie();
            let nodes: Vec<usize> = (0..=trie.num_levels()).map(|d| trie.num_nodes(d)).collect();
            let distinct = trie.paths().count();
            let cfg = Qwen2Config::tiny(cvocab);
            let (_vm, model) = varmap_model(&cfg)?;
            let flop = FlopModel::new(&cfg, trie);
            for &mode in &modes {
                let row = bench.run(
                    &format!("tiny/{size}"),
                    &model,
                    &sdec,
                    &flop,
                    mode,
                    opts.catalogue_batch,
                    opts.catalogue_warmup,
                    opts.catalogue_iters,
                )?;
                cat_rows.push(CatalogueRow {
                    items: size,
                    distinct_sids: distinct,
                    levels: trie.num_levels(),
                    nodes_per_depth: nodes.clone(),
                    vocab: cvocab,
                    decoder_new_ms: build_ms,
                    device_bytes: sdec.tables().device_bytes(),
                    mode: mode.to_string(),
                    batch: opts.catalogue_batch,
                    batches: opts.catalogue_iters,
                    p50_ms: row.p50_ms,
                    p99_ms: row.p99_ms,
                    recs_per_s: row.recs_per_s,
                });
            }
        }
    }

    if opts.catalogue {
        check("catalogue", &mut matmul_checks)?;
    }
    let best = matmul_checks.iter().map(|c| c.1).fold(f64::NAN, f64::max);
    for row in &mut decode_rows {
        row.pct_of_matmul = 100.0 * row.gflops / best;
    }
    let report = Report {
        options: opts.clone(),
        setup,
        matmul_n: n,
        matmul_gflops: best,
        matmul_checks,
        matmul_ms: mm_ms,
        decode: decode_rows,
        flop_models,
        catalogue: cat_rows,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    let md = markdown(&report);
    println!("{md}");
    let out = opts.out.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("bench-reports")
    });
    std::fs::create_dir_all(&out)?;
    let stem = if opts.quick { "decode-quick" } else { "decode" };
    std::fs::write(out.join(format!("{stem}.md")), &md)?;
    std::fs::write(
        out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!("wrote {}/{stem}.{{md,json}}", out.display());
    Ok(())
}
