//! `sidrec-trainer embed-cooc`: one vector per item from the items it meets in train histories.
//!
//! Every train row pairs its target with each of its last `--window` history items; the pair
//! counts become PPMI-SVD vectors ([`sidrec::embed::cooc`]). Only the train split is read, so
//! SIDs built from these vectors carry nothing of the valid or test rows. The output has the
//! layout of `embed`'s (rows in item id order, ids in `<out>.ids.json`), ready to be joined to
//! text embeddings by `sid --embeddings text.npy,cooc.npy`.

use sidrec::data::{DatasetDir, InteractionRow, Split};
use sidrec::embed::cooc::{cooc_embeddings, CoocConfig};
use sidrec::ItemId;

use crate::cli::EmbedCoocArgs;
use crate::embed::write_with_ids;
use crate::error::{Result, TrainerError};

/// The pairs of `rows`: each row's target with each of its last `window` history items, as
/// positions in `ids` (sorted); ids outside `ids` are counted in the second value and skipped.
pub fn row_pairs(
    rows: &[InteractionRow],
    ids: &[ItemId],
    window: usize,
) -> (Vec<(usize, usize)>, usize) {
    let pos = |id: ItemId| ids.binary_search(&id).ok();
    let mut pairs = Vec::new();
    let mut unknown = 0;
    for r in rows {
        let Some(t) = pos(r.item_id) else {
            unknown += 1;
            continue;
        };
        for &h in r.history_item_id.iter().rev().take(window) {
            match pos(h) {
                Some(h) => pairs.push((h, t)),
                None => unknown += 1,
            }
        }
    }
    (pairs, unknown)
}

/// `sidrec-trainer embed-cooc`.
pub fn run(args: &EmbedCoocArgs) -> Result<()> {
    if args.window == 0 {
        return Err(TrainerError::Invalid("--window must be at least 1".into()));
    }
    let ds = DatasetDir::discover(&args.data)?;
    let items = ds.read_items()?;
    let ids: Vec<ItemId> = items.keys().copied().collect();
    let rows = ds.read_split(Split::Train)?;
    let (pairs, unknown) = row_pairs(&rows, &ids, args.window);
    if unknown > 0 {
        eprintln!(
            "note: {unknown} history or target ids of {} are not in {} and were skipped",
            ds.split_path(Split::Train).display(),
            ds.items.display()
        );
    }
    let cfg = CoocConfig {
        dim: args.dim,
        iterations: args.iterations,
        seed: args.seed,
    };
    let e = cooc_embeddings(ids.len(), pairs.iter().copied(), &cfg)?;
    let ids_file = write_with_ids(&args.out, &e.matrix, &ids)?;
    let shown: Vec<String> = e
        .singular_values
        .iter()
        .take(4)
        .map(|s| format!("{s:.2}"))
        .collect();
    println!(
        "co-occurrence vectors of {} items from {} train rows (window {}): {} distinct pairs, \
         {} items with a positive PMI to another ({} zero rows); singular values {}, ..., {:.2}; \
         wrote {} [{} x {}] and {}",
        ids.len(),
        rows.len(),
        args.window,
        e.pairs,
        e.items_with_pairs,
        ids.len() - e.items_with_pairs,
        shown.join(", "),
        e.singular_values.last().copied().unwrap_or(0.0),
        args.out.display(),
        e.matrix.rows,
        e.matrix.cols,
        ids_file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(history: &[ItemId], target: ItemId) -> InteractionRow {
        InteractionRow {
            user_id: "A1".into(),
            history_item_title: vec![String::new(); history.len()],
            item_title: String::new(),
            history_item_id: history.to_vec(),
            item_id: target,
            history_item_sid: Vec::new(),
            item_sid: String::new(),
        }
    }

    #[test]
    fn a_row_pairs_its_target_with_its_last_history_items() {
        let ids = [3, 5, 7, 9];
        let rows = [row(&[3, 5, 7], 9), row(&[9], 4), row(&[4, 3], 5)];
        let (pairs, unknown) = row_pairs(&rows, &ids, 2);
        // Row 1: (7, 9) and (5, 9), not (3, 9); row 2: target 4 unknown; row 3: (3, 5), 4 unknown.
        assert_eq!(pairs, vec![(2, 3), (1, 3), (0, 1)]);
        assert_eq!(unknown, 2);
    }
}
