//! `sidrec-trainer embed`: one embedding per item from its title and description.
//!
//! Texts are built as the reference does ([`sidrec::embed::item_text`]), encoded with a
//! BERT-family model (masked mean pooling, optionally L2-normalised) and written as a float32
//! `.npy` matrix `[items, dim]` whose rows follow item id order. The id of each row is also
//! written to `<out>.ids.json` (a JSON array), so that a consumer need not re-read the dataset.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sidrec::data::DatasetDir;
use sidrec::embed::{self, EncodeOptions, TextEncoder};
use sidrec::{npy, ItemId};

use crate::cli::EmbedArgs;
use crate::error::{Result, TrainerError};
use crate::progress;

/// `<out>.ids.json`: where the row ids of `out` are written.
pub fn ids_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".ids.json");
    PathBuf::from(name)
}

/// Write `matrix` to `out` and its row ids to `<out>.ids.json` (each atomically); returns the
/// ids file's path. Shared by `embed` and `embed-cooc`, whose outputs `sid` reads alike.
pub fn write_with_ids(out: &Path, matrix: &npy::Matrix, ids: &[ItemId]) -> Result<PathBuf> {
    npy::write_npy(out, matrix)?;
    let ids_file = ids_path(out);
    let ids_json = serde_json::to_vec(ids).map_err(|e| TrainerError::Invalid(e.to_string()))?;
    sidrec::io::write_bytes_atomic(&ids_file, &ids_json)?;
    Ok(ids_file)
}

/// `sidrec-trainer embed`.
pub fn run(args: &EmbedArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(TrainerError::Invalid(
            "--batch-size must be at least 1".into(),
        ));
    }
    let device = sidrec::device::parse_device(&args.device)?;
    let encoder = TextEncoder::load(&args.encoder, &device, args.max_length)?;
    let ds = DatasetDir::discover(&args.data)?;
    let items = ds.read_items()?;
    if items.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: no items to embed",
            ds.items.display()
        )));
    }
    let (ids, texts) = embed::item_texts(&items);
    // Tokens after truncation: the encoder's work is about proportional to them, so tokens/s
    // (unlike items/s) compares runs with different --max-length.
    let mut tokens = 0usize;
    for t in &texts {
        tokens += encoder.token_ids(t)?.len();
    }
    eprintln!(
        "embedding {} items ({} tokens after truncation) of {} with {} ({}-d, max {} tokens, \
         batch {}) ...",
        texts.len(),
        tokens,
        ds.items.display(),
        args.encoder.display(),
        encoder.dim(),
        args.max_length,
        args.batch_size,
    );
    let opts = EncodeOptions {
        batch_size: args.batch_size,
        normalize: args.normalize,
        sort_by_length: !args.no_sort,
        max_batch_tokens: args.max_batch_tokens,
    };
    let bar = progress::rate_bar(texts.len() as u64, "embedding");
    let start = Instant::now();
    let cpu_start = sidrec::device::cpu_seconds();
    let matrix = encoder.encode_all(&texts, opts, |n| bar.inc(n as u64))?;
    let secs = start.elapsed().as_secs_f64();
    // CPU time as well: on a busy machine it is the steadier measure of the work.
    let cpu = match (cpu_start, sidrec::device::cpu_seconds()) {
        (Some(a), Some(b)) => format!("; CPU {:.1} s", b - a),
        _ => String::new(),
    };
    bar.finish_and_clear();

    let ids_file = write_with_ids(&args.out, &matrix, &ids)?;
    println!(
        "embedded {} items ({} tokens, {:.1} per item) in {:.1} s ({:.1} items/s, {:.0} tokens/s{}); \
         wrote {} [{} x {}] and {}",
        matrix.rows,
        tokens,
        tokens as f64 / matrix.rows.max(1) as f64,
        secs,
        matrix.rows as f64 / secs.max(1e-9),
        tokens as f64 / secs.max(1e-9),
        cpu,
        args.out.display(),
        matrix.rows,
        matrix.cols,
        ids_file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_file_sits_beside_the_matrix() {
        assert_eq!(
            ids_path(Path::new("runs/items.npy")),
            PathBuf::from("runs/items.npy.ids.json")
        );
    }
}
