//! `data amazon23`: raw Amazon Reviews 2023 (any category) → a dataset directory plus
//! `features.json`, with the reference's `data/amazon23_data_process.py` field mapping and the
//! same k-core, window, sliding-window samples and 8:1:1 temporal split as `data amazon18`.
//!
//! Field mapping (2018 → 2023): the item id is `parent_asin` (reviews and metadata), the user
//! `user_id`, the time `timestamp` in milliseconds (integer-divided by 1000), the rating
//! `rating`; `verified_purchase` feeds the features.
//!
//! Differences from `data amazon18`, as in the reference's 2023 script:
//! * a title is valid when it is non-empty after [`clean_text`] (no 20-word limit, no
//!   `<span id` check);
//! * no restart with an earlier start year (the window is taken as given);
//! * item fields: `description` and `features` are the cleaned list entries joined with one
//!   space, `categories` joined with `", "`, `brand` = the cleaned `store`, `main_category`,
//!   `details` (kept as given) and `images` (hi_res, else large, else thumb URLs).
//!
//! **Malformed lines are not silently skipped** (the reference drops them without a word): a
//! line that is not a JSON object, or lacks a required field (`user_id`, `parent_asin`,
//! `timestamp` for a review; `parent_asin` for metadata), or has a field of the wrong type, is
//! counted and left out, and the report names the file and line of the first few.
//!
//! Features (`features.json`, [`super::features`]): `price`, `average_rating`, `rating_number`
//! from the metadata; `mean_rating` and `verified_share` per item and per user over the reviews
//! that are part of the train split.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use serde_json::{Map, Value};
use sidrec::data::{DatasetFiles, ItemMeta, Items};
use sidrec::ItemId;

use super::amazon18::{
    clean_text, k_core, month_start_utc, open_maybe_gz, parse_year_month, print_kcore_summary,
    py_str, sequences, KcorePass, Review,
};
use super::features::{FeatureSource, Features, ReviewAggregate, ReviewFacts};
use super::samples;
use crate::cli::Amazon23Args;
use crate::error::{Result, TrainerError};
use crate::progress;

/// How many malformed lines are quoted in the report (per file).
pub const MALFORMED_QUOTED: usize = 5;

/// Options of the preprocessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amazon23Options {
    /// K of the k-core (users and items).
    pub k: usize,
    /// Start `(year, month)`.
    pub start: (i32, u32),
    /// End `(year, month)`, inclusive bound at day 1, 00:00 UTC.
    pub end: (i32, u32),
}

impl Default for Amazon23Options {
    /// The reference script's defaults.
    fn default() -> Self {
        Self {
            k: 5,
            start: (1996, 1),
            end: (2025, 1),
        }
    }
}

/// Malformed lines of one input file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Malformed {
    /// How many lines were left out.
    pub count: usize,
    /// The first [`MALFORMED_QUOTED`] of them, each `file:line: reason`.
    pub first: Vec<String>,
}

impl Malformed {
    fn note(&mut self, path: &Path, line: u64, reason: impl std::fmt::Display) {
        self.count += 1;
        if self.first.len() < MALFORMED_QUOTED {
            self.first
                .push(format!("{}:{line}: {reason}", path.display()));
        }
    }
}

/// What the preprocessing did.
#[derive(Debug, Clone)]
pub struct Amazon23Report {
    /// Well-formed review lines read.
    pub reviews_read: usize,
    /// Malformed review lines (left out).
    pub reviews_malformed: Malformed,
    /// Well-formed metadata lines read.
    pub meta_read: usize,
    /// Malformed metadata lines (left out).
    pub meta_malformed: Malformed,
    /// Items with a valid title.
    pub valid_titles: usize,
    /// The k-core passes.
    pub passes: Vec<KcorePass>,
    /// Users in the output.
    pub users: usize,
    /// Items in the output.
    pub items: usize,
    /// Interactions kept.
    pub interactions: usize,
    /// `parent_asin` of each item, in id order.
    pub item_asins: Vec<String>,
    /// Raw `user_id` of each user, in uid order (CSV user `A<uid>`).
    pub user_ids: Vec<String>,
}

/// The result: dataset files (no SID index), features and a report.
#[derive(Debug, Clone)]
pub struct Amazon23Output {
    /// Splits (empty SID columns) and items.
    pub files: DatasetFiles,
    /// Item value and user features.
    pub features: Features,
    /// What happened.
    pub report: Amazon23Report,
}

/// Read a JSON-lines file line by line, handing each object to `take`. Lines that are not
/// UTF-8, not JSON, or not an object — or that `take` rejects — are counted as malformed.
fn for_each_object(
    path: &Path,
    what: &str,
    mut take: impl FnMut(&Map<String, Value>) -> std::result::Result<(), String>,
) -> Result<(usize, Malformed)> {
    let mut reader = open_maybe_gz(path)?;
    let pb = progress::spinner(what);
    let (mut ok, mut bad) = (0usize, Malformed::default());
    let mut buf = Vec::new();
    let mut lineno = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| TrainerError::io(path, e))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let Ok(line) = std::str::from_utf8(&buf) else {
            bad.note(path, lineno, "not UTF-8");
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => match take(&o) {
                Ok(()) => ok += 1,
                Err(reason) => bad.note(path, lineno, reason),
            },
            Ok(_) => bad.note(path, lineno, "not a JSON object"),
            Err(e) => bad.note(path, lineno, format!("invalid JSON: {e}")),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((ok, bad))
}

/// A required string field.
fn req_str(o: &Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    match o.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("`{key}` is empty")),
        Some(_) => Err(format!("`{key}` is not a string")),
        None => Err(format!("missing `{key}`")),
    }
}

/// An optional number (absent or null → None).
fn opt_num(o: &Map<String, Value>, key: &str) -> std::result::Result<Option<f64>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().filter(|x| x.is_finite())),
        Some(_) => Err(format!("`{key}` is not a number")),
    }
}

/// Milliseconds → seconds, rounding down as Python's `//`.
fn timestamp_secs(o: &Map<String, Value>) -> std::result::Result<i64, String> {
    let ms = match o.get("timestamp") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|x| x.is_finite()).map(|x| x as i64)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        None => return Err("missing `timestamp`".into()),
        _ => None,
    };
    ms.map(|ms| ms.div_euclid(1000))
        .ok_or_else(|| "`timestamp` is not an integer (milliseconds)".into())
}

/// Price as the metadata gives it: a number, or a string such as `"$1,299.00"`; anything else
/// (null, `"None"`, ranges) is unknown.
fn price_of(v: Option<&Value>) -> Option<f64> {
    let p = match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(['$', ','], "").parse::<f64>().ok(),
        _ => None,
    }?;
    (p.is_finite() && p >= 0.0).then_some(p)
}

/// List entries cleaned and joined (a single string is cleaned as is).
fn joined(v: Option<&Value>, sep: &str) -> String {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| clean_text(&py_str(x)))
            .collect::<Vec<_>>()
            .join(sep),
        Some(Value::Null) | None => String::new(),
        Some(other) => clean_text(&py_str(other)),
    }
}

/// Image URLs: per image, hi_res, else large, else thumb.
fn image_urls(v: Option<&Value>) -> Vec<Value> {
    let Some(Value::Array(imgs)) = v else {
        return Vec::new();
    };
    imgs.iter()
        .filter_map(|img| {
            let o = img.as_object()?;
            ["hi_res", "large", "thumb"]
                .iter()
                .find_map(|k| o.get(*k).filter(|u| u.is_string()).cloned())
        })
        .collect()
}

/// Metadata of one item, as kept.
struct MetaLine {
    item: ItemMeta,
    price: Option<f64>,
    average_rating: Option<f64>,
    rating_number: Option<u64>,
}

fn meta_line(o: &Map<String, Value>) -> std::result::Result<(String, MetaLine), String> {
    let asin = req_str(o, "parent_asin")?;
    let title = match o.get("title") {
        None | Some(Value::Null) => String::new(),
        Some(v) => clean_text(&py_str(v)),
    };
    let average_rating = opt_num(o, "average_rating")?;
    let rating_number = match opt_num(o, "rating_number")? {
        Some(x) if x >= 0.0 && x.fract() == 0.0 => Some(x as u64),
        Some(_) => return Err("`rating_number` is not a non-negative integer".into()),
        None => None,
    };
    let mut item = ItemMeta::new(title, joined(o.get("description"), " "));
    let extra = &mut item.extra;
    extra.insert("features".into(), joined(o.get("features"), " ").into());
    extra.insert(
        "categories".into(),
        joined(o.get("categories"), ", ").into(),
    );
    let store = o.get("store").map(py_str).unwrap_or_default();
    let store = if o.get("store").is_some_and(Value::is_null) {
        String::new()
    } else {
        clean_text(&store)
    };
    extra.insert("brand".into(), store.into());
    extra.insert(
        "main_category".into(),
        o.get("main_category")
            .filter(|v| !v.is_null())
            .map(py_str)
            .unwrap_or_default()
            .into(),
    );
    extra.insert(
        "details".into(),
        o.get("details")
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    extra.insert("images".into(), Value::Array(image_urls(o.get("images"))));
    Ok((
        asin,
        MetaLine {
            item,
            price: price_of(o.get("price")),
            average_rating,
            rating_number,
        },
    ))
}

fn review_line(o: &Map<String, Value>) -> std::result::Result<(Review, ReviewFacts), String> {
    let user = req_str(o, "user_id")?;
    let asin = req_str(o, "parent_asin")?;
    let time = timestamp_secs(o)?;
    let rating = opt_num(o, "rating")?;
    let verified = match o.get("verified_purchase") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("`verified_purchase` is not a boolean".into()),
    };
    Ok((
        Review { user, asin, time },
        ReviewFacts { rating, verified },
    ))
}

/// Run the whole preprocessing.
pub fn process(
    reviews_path: &Path,
    meta_path: &Path,
    opts: &Amazon23Options,
) -> Result<Amazon23Output> {
    let mut meta: HashMap<String, MetaLine> = HashMap::new();
    let mut titles: HashMap<String, String> = HashMap::new();
    let (meta_read, meta_malformed) = for_each_object(meta_path, "reading metadata", |o| {
        let (asin, m) = meta_line(o)?;
        // As the reference: the last line of an item wins, but a title once valid stays.
        if !m.item.title.is_empty() {
            titles.insert(asin.clone(), m.item.title.clone());
        }
        meta.insert(asin, m);
        Ok(())
    })?;
    let mut reviews = Vec::new();
    let mut facts = Vec::new();
    let (reviews_read, reviews_malformed) =
        for_each_object(reviews_path, "reading reviews", |o| {
            let (r, f) = review_line(o)?;
            reviews.push(r);
            facts.push(f);
            Ok(())
        })?;

    let start = month_start_utc(opts.start.0, opts.start.1);
    let end = month_start_utc(opts.end.0, opts.end.1);
    let (kept, passes) = k_core(&reviews, &titles, opts.k, start, end);
    if kept.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: no review survives the window and the {}-core ({} reviews read, {} malformed)",
            reviews_path.display(),
            opts.k,
            reviews_read,
            reviews_malformed.count
        )));
    }
    let seqs = sequences(&reviews, &kept);

    let mut items = Items::new();
    for (id, asin) in seqs.item_asins.iter().enumerate() {
        let mut item = meta
            .get(asin)
            .map(|m| m.item.clone())
            .unwrap_or_else(|| ItemMeta::new("", ""));
        item.title = titles.get(asin).cloned().unwrap_or_default();
        items.insert(id as ItemId, item);
    }

    let split = samples::build_and_split(&seqs.users);
    let rows = |s: &[samples::Sample]| samples::to_rows(s, &seqs.users, &items, None);
    let files = DatasetFiles {
        train: rows(&split.train),
        valid: rows(&split.valid),
        test: rows(&split.test),
        items,
        index: None,
    };

    // Features: counts from the train rows; review aggregates over each user's events up to
    // their last train target (event 0 is only ever history, known once sample 1 is).
    let mut features = Features::from_train(&files.train, &files.items);
    features.source = FeatureSource::Amazon23;
    let mut train_upto: Vec<Option<usize>> = vec![None; seqs.users.len()];
    for s in &split.train {
        let u = &mut train_upto[s.user];
        *u = Some(u.map_or(s.position, |p| p.max(s.position)));
    }
    let mut by_item: HashMap<ItemId, ReviewAggregate> = HashMap::new();
    for (u, upto) in train_upto.iter().enumerate() {
        let Some(upto) = *upto else { continue };
        let mut agg = ReviewAggregate::default();
        for p in 0..=upto {
            let f = facts[seqs.review_of[u][p]];
            agg.add(f);
            by_item.entry(seqs.users[u].events[p].0).or_default().add(f);
        }
        if let Some(uf) = features.users.get_mut(&seqs.users[u].user_id) {
            uf.mean_rating = agg.mean_rating();
            uf.verified_share = agg.verified_share();
        }
    }
    for (id, f) in features.items.iter_mut() {
        if let Some(m) = seqs.item_asins.get(*id as usize).and_then(|a| meta.get(a)) {
            f.price = m.price;
            f.average_rating = m.average_rating;
            f.rating_number = m.rating_number;
        }
        if let Some(agg) = by_item.get(id) {
            f.mean_rating = agg.mean_rating();
            f.verified_share = agg.verified_share();
        }
    }
    features.assign_values();

    let report = Amazon23Report {
        reviews_read,
        reviews_malformed,
        meta_read,
        meta_malformed,
        valid_titles: titles.len(),
        passes,
        users: seqs.users.len(),
        items: seqs.item_asins.len(),
        interactions: kept.len(),
        item_asins: seqs.item_asins,
        user_ids: seqs.user_ids,
    };
    Ok(Amazon23Output {
        files,
        features,
        report,
    })
}

fn print_malformed(what: &str, m: &Malformed) {
    if m.count == 0 {
        return;
    }
    println!(
        "{} malformed {what} line(s) left out; first {}:",
        m.count,
        m.first.len()
    );
    for l in &m.first {
        println!("  {l}");
    }
}

/// `sidrec-trainer data amazon23`.
pub fn run(args: &Amazon23Args) -> Result<()> {
    let opts = Amazon23Options {
        k: args.user_k,
        start: parse_year_month(&args.start)?,
        end: parse_year_month(&args.end)?,
    };
    let out = process(&args.reviews, &args.meta, &opts)?;
    let r = &out.report;
    println!(
        "read {} reviews, {} metadata lines ({} valid titles)",
        r.reviews_read, r.meta_read, r.valid_titles
    );
    print_malformed("review", &r.reviews_malformed);
    print_malformed("metadata", &r.meta_malformed);
    print_kcore_summary(
        opts.k,
        &r.passes,
        (r.users, r.items, r.interactions),
        &out.files,
    );
    for p in out.files.write(&args.out)? {
        println!("wrote {}", p.display());
    }
    println!("wrote {}", out.features.write(&args.out)?.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn review_fields_and_errors() {
        let (r, f) = review_line(&obj(json!({"user_id": "U", "parent_asin": "P",
            "timestamp": 1_588_615_855_070i64, "rating": 4.0, "verified_purchase": true})))
        .unwrap();
        assert_eq!(
            (r.user.as_str(), r.asin.as_str(), r.time),
            ("U", "P", 1_588_615_855)
        );
        assert_eq!((f.rating, f.verified), (Some(4.0), Some(true)));
        let err = |v: Value| review_line(&obj(v)).err().unwrap_or_default();
        assert_eq!(
            err(json!({"parent_asin": "P", "timestamp": 1})),
            "missing `user_id`"
        );
        assert_eq!(
            err(json!({"user_id": "U", "parent_asin": "P"})),
            "missing `timestamp`"
        );
        assert!(
            err(json!({"user_id": "U", "parent_asin": "P", "timestamp": "x"}))
                .contains("not an integer")
        );
        assert!(
            err(json!({"user_id": "U", "parent_asin": "P", "timestamp": 5, "rating": "five"}))
                .contains("`rating`")
        );
    }

    #[test]
    fn prices_and_joined_lists() {
        assert_eq!(price_of(Some(&json!(12.5))), Some(12.5));
        assert_eq!(price_of(Some(&json!("$1,299.00"))), Some(1299.0));
        assert_eq!(price_of(Some(&json!("None"))), None);
        assert_eq!(price_of(Some(&json!("$3 - $9"))), None);
        assert_eq!(price_of(Some(&Value::Null)), None);
        assert_eq!(
            joined(
                Some(&json!(["<b>Strong</b>  glue", "fast &amp; clean"])),
                " "
            ),
            "Strong glue fast & clean"
        );
        assert_eq!(joined(Some(&json!(["A", "B"])), ", "), "A, B");
    }
}
