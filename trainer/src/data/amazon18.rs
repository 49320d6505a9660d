//! `data amazon18`: raw Amazon-2018 reviews + metadata → a dataset directory, exactly as the
//! reference's `data/amazon18_data_process.py` does (MINIONEREC.md §1.1):
//!
//! 1. **Titles** (metadata, in file order): an item without `title`, or whose title contains
//!    `<span id`, is invalid. The title is cleaned (`&quot;`→`"`, `&amp;`→`&`, strip spaces, strip
//!    `"`) and kept only if it has more than one character and at most 20 space-separated words
//!    (`title.split(" ")`, so double spaces count). A later valid line for the same asin wins.
//! 2. **Window**: reviews with `unixReviewTime` before the start or after the end are ignored.
//! 3. **Iterative k-core** with K = `--user-k` for users AND items (the reference parses `item_k`
//!    but never uses it): items without a valid title are removed up front; each pass counts the
//!    surviving in-window reviews, marks every user and item with fewer than K for removal, and
//!    the passes repeat until one removes nothing.
//! 4. If fewer than `--min-items` (reference: 3000) items survive and the start year is after
//!    1996, the start moves one year earlier and everything restarts.
//! 5. **Ids**: users in order of first appearance among the surviving reviews; per user, reviews
//!    sorted by time (stable); items numbered in order of first encounter. Duplicate (user, item)
//!    interactions are kept.
//! 6. **Samples and split**: sliding windows (history ≤ 10), global stable sort by target time,
//!    `int()` 80/10/10 cut ([`super::samples`]).
//! 7. **Items**: `description` = `clean_text(str(meta["description"]))` — the Python repr of the
//!    list with HTML tags (`<[^>]+>`) removed, then entities unescaped, whitespace runs collapsed to
//!    one space and the ends stripped; `brand` = `brand.replace("by\n", "").strip()`; `categories`
//!    from the `categories` key as the reference reads it (Amazon-2018 metadata calls the field
//!    `category`, so it comes out empty, as in the shipped files).
//!
//! The splits are written with empty SID columns (`[]` / `""`); SIDs come later from `trainer sid`.
//!
//! **Deliberate difference:** the reference computes the window bounds as *local-time* midnight
//! (`datetime(...).timestamp()`), so its output depends on the machine's time zone. We use UTC
//! midnight of day 1 of the month, which reproduces the reference run on a UTC machine.
//! Entity decoding uses the HTML5 table; the rare entities that Python's `html.unescape` also
//! accepts without a trailing `;` (e.g. `&amp` followed by a space) are left as they are.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;
use sidrec::data::pylit::repr_str;
use sidrec::data::{DatasetFiles, ItemMeta, Items};
use sidrec::ItemId;

use super::samples::{self, UserSequence};
use crate::cli::Amazon18Args;
use crate::error::{Result, TrainerError};
use crate::progress;

/// Options of the preprocessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amazon18Options {
    /// K of the k-core (users and items).
    pub k: usize,
    /// Start `(year, month)`.
    pub start: (i32, u32),
    /// End `(year, month)`, inclusive bound at day 1, 00:00 UTC.
    pub end: (i32, u32),
    /// Restart one year earlier while fewer items than this survive.
    pub min_items: usize,
}

impl Default for Amazon18Options {
    fn default() -> Self {
        Self {
            k: 5,
            start: (2016, 10),
            end: (2018, 11),
            min_items: 3000,
        }
    }
}

/// One review line: who reviewed which item when (Unix seconds).
#[derive(Debug, Clone)]
pub(crate) struct Review {
    pub(crate) user: String,
    pub(crate) asin: String,
    pub(crate) time: i64,
}

/// One k-core pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KcorePass {
    /// Users counted in this pass.
    pub users: usize,
    /// Items counted in this pass.
    pub items: usize,
    /// Reviews counted in this pass.
    pub reviews: usize,
    /// Users marked for removal by this pass (sorted).
    pub removed_users: Vec<String>,
    /// Items marked for removal by this pass (sorted).
    pub removed_items: Vec<String>,
}

/// What the preprocessing did.
#[derive(Debug, Clone)]
pub struct Amazon18Report {
    /// Review lines read.
    pub reviews_read: usize,
    /// Metadata lines read.
    pub meta_read: usize,
    /// Items with a valid title.
    pub valid_titles: usize,
    /// Start year finally used (after any restarts).
    pub start_year: i32,
    /// The k-core passes of the final attempt.
    pub passes: Vec<KcorePass>,
    /// Users, items and interactions in the output.
    pub users: usize,
    /// Items in the output.
    pub items: usize,
    /// Interactions kept.
    pub interactions: usize,
    /// Item asins in id order.
    pub item_asins: Vec<String>,
    /// User ids (reviewerID) in uid order.
    pub user_ids: Vec<String>,
}

/// The result: dataset files (no SID index) and a report.
#[derive(Debug, Clone)]
pub struct Amazon18Output {
    /// Splits (empty SID columns) and items.
    pub files: DatasetFiles,
    /// What happened.
    pub report: Amazon18Report,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix time of UTC midnight on day 1 of `year`-`month`.
pub fn month_start_utc(year: i32, month: u32) -> i64 {
    days_from_civil(year, month, 1) * 86_400
}

/// Parse `YYYY-MM`.
pub fn parse_year_month(s: &str) -> Result<(i32, u32)> {
    let bad = || {
        TrainerError::Invalid(format!(
            "`{s}` is not a month; expected YYYY-MM, e.g. 2016-10"
        ))
    };
    let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) {
        return Err(bad());
    }
    Ok((y, m))
}

/// Python's `\s` / `str.isspace()` for the characters that matter here.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// The reference's `clean_text`: remove `<[^>]+>` tags, unescape HTML entities, replace
/// `&quot;`/`&amp;` once more, collapse whitespace runs to one space, strip.
pub fn clean_text(text: &str) -> String {
    let mut no_tags = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        no_tags.push_str(&rest[..lt]);
        let after = &rest[lt + 1..];
        match after.find('>') {
            Some(gt) if gt > 0 => rest = &after[gt + 1..],
            _ => {
                no_tags.push('<');
                rest = after;
            }
        }
    }
    no_tags.push_str(rest);
    let unescaped = html_escape::decode_html_entities(&no_tags)
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let mut out = String::with_capacity(unescaped.len());
    let mut in_space = false;
    for c in unescaped.chars() {
        if is_py_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out.trim_matches(is_py_space).to_string()
}

/// The reference's title cleaning; `None` when the title is not kept.
pub fn clean_title(title: &str) -> Option<String> {
    if title.contains("<span id") {
        return None;
    }
    let t = title.replace("&quot;", "\"").replace("&amp;", "&");
    let t = t.trim_matches(' ').trim_matches('"');
    (t.chars().count() > 1 && t.split(' ').count() <= 20).then(|| t.to_string())
}

/// Python's `repr` of a JSON value (as the value `json.loads` would give).
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => repr_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", repr_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `str()` of a JSON value.
pub(crate) fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python truthiness of a JSON value.
fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Open a file, transparently gunzipping it when it starts with the gzip magic bytes.
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>> {
    let mut file = File::open(path).map_err(|e| TrainerError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(|e| TrainerError::io(path, e))?;
    let file = File::open(path).map_err(|e| TrainerError::io(path, e))?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// Parse every non-blank line of a line-JSON file as an object.
fn read_json_lines(path: &Path, what: &str) -> Result<Vec<(u64, serde_json::Map<String, Value>)>> {
    let reader = open_maybe_gz(path)?;
    let pb = progress::spinner(what);
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let lineno = i as u64 + 1;
        let line = line.map_err(|e| TrainerError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(o)) => out.push((lineno, o)),
            Ok(_) => return Err(TrainerError::parse(path, lineno, "expected a JSON object")),
            Err(e) => {
                return Err(TrainerError::parse(
                    path,
                    lineno,
                    format!("invalid JSON: {e}"),
                ))
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out)
}

fn str_field(
    path: &Path,
    line: u64,
    o: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<String> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(TrainerError::parse(
            path,
            line,
            format!("`{key}` is not a string"),
        )),
        None => Err(TrainerError::parse(path, line, format!("missing `{key}`"))),
    }
}

fn read_reviews(path: &Path) -> Result<Vec<Review>> {
    let mut out = Vec::new();
    for (line, o) in read_json_lines(path, "reading reviews")? {
        let time = match o.get("unixReviewTime") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            TrainerError::parse(path, line, "missing or non-integer `unixReviewTime`")
        })?;
        out.push(Review {
            user: str_field(path, line, &o, "reviewerID")?,
            asin: str_field(path, line, &o, "asin")?,
            time,
        });
    }
    Ok(out)
}

/// Metadata: every line by asin (last wins) and the valid cleaned titles.
struct Meta {
    lines: usize,
    by_asin: HashMap<String, serde_json::Map<String, Value>>,
    titles: HashMap<String, String>,
}

fn read_meta(path: &Path) -> Result<Meta> {
    let mut by_asin = HashMap::new();
    let mut titles = HashMap::new();
    let lines = read_json_lines(path, "reading metadata")?;
    let n = lines.len();
    for (line, o) in lines {
        let asin = str_field(path, line, &o, "asin")?;
        let title = match o.get("title") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => Some(py_str(v)),
        };
        if let Some(t) = title.as_deref().and_then(clean_title) {
            titles.insert(asin.clone(), t);
        }
        by_asin.insert(asin, o);
    }
    Ok(Meta {
        lines: n,
        by_asin,
        titles,
    })
}

/// The iterative k-core; returns indices of surviving reviews and the passes.
pub(crate) fn k_core(
    reviews: &[Review],
    titles: &HashMap<String, String>,
    k: usize,
    start: i64,
    end: i64,
) -> (Vec<usize>, Vec<KcorePass>) {
    let mut removed_items: HashSet<&str> = reviews
        .iter()
        .filter(|r| !titles.contains_key(&r.asin))
        .map(|r| r.asin.as_str())
        .collect();
    let mut removed_users: HashSet<&str> = HashSet::new();
    let mut current: Vec<usize> = (0..reviews.len()).collect();
    let mut passes = Vec::new();
    // The reference skips the window when a bound is 0 (`if start_timestamp and end_timestamp`).
    let windowed = start != 0 && end != 0;
    loop {
        let mut kept = Vec::with_capacity(current.len());
        let mut users: HashMap<&str, usize> = HashMap::new();
        let mut items: HashMap<&str, usize> = HashMap::new();
        for &i in &current {
            let r = &reviews[i];
            if windowed && (r.time < start || r.time > end) {
                continue;
            }
            if removed_users.contains(r.user.as_str()) || removed_items.contains(r.asin.as_str()) {
                continue;
            }
            *users.entry(&r.user).or_default() += 1;
            *items.entry(&r.asin).or_default() += 1;
            kept.push(i);
        }
        let mut pass = KcorePass {
            users: users.len(),
            items: items.len(),
            reviews: kept.len(),
            removed_users: Vec::new(),
            removed_items: Vec::new(),
        };
        for (u, c) in users {
            if c < k {
                removed_users.insert(u);
                pass.removed_users.push(u.to_string());
            }
        }
        for (i, c) in items {
            if c < k {
                removed_items.insert(i);
                pass.removed_items.push(i.to_string());
            }
        }
        pass.removed_users.sort();
        pass.removed_items.sort();
        let done = pass.removed_users.is_empty() && pass.removed_items.is_empty();
        passes.push(pass);
        if done {
            return (kept, passes);
        }
        current = kept;
    }
}

/// `brand` as the reference writes it.
fn brand_of(meta: &serde_json::Map<String, Value>) -> String {
    let b = meta.get("brand").map(py_str).unwrap_or_default();
    b.replace("by\n", "").trim_matches(is_py_space).to_string()
}

/// `categories` as the reference writes it (from the `categories` key).
fn categories_of(meta: &serde_json::Map<String, Value>) -> String {
    let Some(Value::Array(cats)) = meta.get("categories") else {
        return String::new();
    };
    if cats.is_empty() {
        return String::new();
    }
    let flat: Vec<&Value> = if cats[0].is_array() {
        cats.iter()
            .flat_map(|g| match g {
                Value::Array(a) => a.iter().collect::<Vec<_>>(),
                other => vec![other],
            })
            .collect()
    } else {
        cats.iter().collect()
    };
    flat.iter()
        .map(|c| py_str(c))
        .filter(|c| !c.contains("</span>"))
        .map(|c| c.trim_matches(is_py_space).to_string())
        .collect::<Vec<_>>()
        .join(",")
        .trim_matches(is_py_space)
        .to_string()
}

/// The surviving reviews as per-user sequences, numbered as the reference numbers them.
pub(crate) struct Sequences {
    /// Users in order of first appearance among the surviving reviews (`A<uid>`), each with its
    /// reviews sorted by time (stable).
    pub(crate) users: Vec<UserSequence>,
    /// Raw user ids, in uid order.
    pub(crate) user_ids: Vec<String>,
    /// Raw item ids in item-id order (order of first encounter walking the users).
    pub(crate) item_asins: Vec<String>,
    /// For each user, the index into the review list of each of its events.
    pub(crate) review_of: Vec<Vec<usize>>,
}

/// Number users and items and sort each user's reviews by time, as both Amazon scripts do.
pub(crate) fn sequences(reviews: &[Review], kept: &[usize]) -> Sequences {
    let mut user_index: HashMap<&str, usize> = HashMap::new();
    let mut per_user: Vec<Vec<usize>> = Vec::new();
    let mut user_ids = Vec::new();
    for &i in kept {
        let r = &reviews[i];
        let u = *user_index.entry(&r.user).or_insert_with(|| {
            per_user.push(Vec::new());
            user_ids.push(r.user.clone());
            per_user.len() - 1
        });
        per_user[u].push(i);
    }
    let mut item_index: HashMap<&str, ItemId> = HashMap::new();
    let mut item_asins: Vec<String> = Vec::new();
    let mut users = Vec::with_capacity(per_user.len());
    for (uid, rs) in per_user.iter_mut().enumerate() {
        rs.sort_by_key(|&i| reviews[i].time);
        let events = rs
            .iter()
            .map(|&i| {
                let r = &reviews[i];
                let id = *item_index.entry(&r.asin).or_insert_with(|| {
                    item_asins.push(r.asin.clone());
                    (item_asins.len() - 1) as ItemId
                });
                (id, r.time)
            })
            .collect();
        users.push(UserSequence {
            user_id: format!("A{uid}"),
            events,
        });
    }
    Sequences {
        users,
        user_ids,
        item_asins,
        review_of: per_user,
    }
}

/// Run the whole preprocessing.
pub fn process(
    reviews_path: &Path,
    meta_path: &Path,
    opts: &Amazon18Options,
) -> Result<Amazon18Output> {
    let meta = read_meta(meta_path)?;
    let reviews = read_reviews(reviews_path)?;
    let end = month_start_utc(opts.end.0, opts.end.1);
    let mut st_year = opts.start.0;
    let (kept, passes) = loop {
        let start = month_start_utc(st_year, opts.start.1);
        let (kept, passes) = k_core(&reviews, &meta.titles, opts.k, start, end);
        let n_items = passes.last().map_or(0, |p| p.items);
        if st_year > 1996 && n_items < opts.min_items {
            st_year -= 1;
            continue;
        }
        break (kept, passes);
    };
    if kept.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: no review survives the window and the {}-core",
            reviews_path.display(),
            opts.k
        )));
    }

    let seqs = sequences(&reviews, &kept);
    let (users, user_ids, item_asins) = (seqs.users, seqs.user_ids, seqs.item_asins);

    let mut items = Items::new();
    for (id, asin) in item_asins.iter().enumerate() {
        let title = meta.titles.get(asin).cloned().unwrap_or_default();
        let m = meta.by_asin.get(asin);
        let description = m
            .and_then(|m| m.get("description"))
            .filter(|d| py_truthy(d))
            .map(|d| clean_text(&py_str(d)))
            .unwrap_or_default();
        let mut item = ItemMeta::new(title, description);
        item.extra
            .insert("brand".into(), m.map(brand_of).unwrap_or_default().into());
        item.extra.insert(
            "categories".into(),
            m.map(categories_of).unwrap_or_default().into(),
        );
        items.insert(id as ItemId, item);
    }

    let split = samples::build_and_split(&users);
    let rows = |s: &[samples::Sample]| samples::to_rows(s, &users, &items, None);
    let files = DatasetFiles {
        train: rows(&split.train),
        valid: rows(&split.valid),
        test: rows(&split.test),
        items,
        index: None,
    };
    let report = Amazon18Report {
        reviews_read: reviews.len(),
        meta_read: meta.lines,
        valid_titles: meta.titles.len(),
        start_year: st_year,
        passes,
        users: users.len(),
        items: item_asins.len(),
        interactions: kept.len(),
        item_asins,
        user_ids,
    };
    Ok(Amazon18Output { files, report })
}

/// `sidrec-trainer data amazon18`.
pub fn run(args: &Amazon18Args) -> Result<()> {
    let opts = Amazon18Options {
        k: args.user_k,
        start: parse_year_month(&args.start)?,
        end: parse_year_month(&args.end)?,
        min_items: args.min_items,
    };
    let out = process(&args.reviews, &args.meta, &opts)?;
    let r = &out.report;
    println!(
        "read {} reviews, {} metadata lines ({} valid titles)",
        r.reviews_read, r.meta_read, r.valid_titles
    );
    if r.start_year != opts.start.0 {
        println!(
            "fewer than {} items in the window: start moved to {}-{:02}",
            opts.min_items, r.start_year, opts.start.1
        );
    }
    print_kcore_summary(
        opts.k,
        &r.passes,
        (r.users, r.items, r.interactions),
        &out.files,
    );
    for p in out.files.write(&args.out)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// The k-core passes and the kept totals of a conversion (`data amazon18` and `data amazon23`).
pub(crate) fn print_kcore_summary(
    k: usize,
    passes: &[KcorePass],
    (users, items, interactions): (usize, usize, usize),
    files: &DatasetFiles,
) {
    for (i, p) in passes.iter().enumerate() {
        println!(
            "{k}-core pass {}: {} users, {} items, {} reviews; removed {} users, {} items",
            i + 1,
            p.users,
            p.items,
            p.reviews,
            p.removed_users.len(),
            p.removed_items.len()
        );
    }
    println!(
        "kept {users} users, {items} items, {interactions} interactions: train {} / valid {} / test {} rows",
        files.train.len(),
        files.valid.len(),
        files.test.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_month_starts() {
        assert_eq!(month_start_utc(1970, 1), 0);
        assert_eq!(month_start_utc(2016, 10), 1_475_280_000);
        assert_eq!(month_start_utc(2018, 11), 1_541_030_400);
        assert_eq!(parse_year_month("2016-10").unwrap(), (2016, 10));
        assert!(parse_year_month("2016-13").is_err());
        assert!(parse_year_month("2016").is_err());
    }

    #[test]
    fn cleaning_matches_the_reference() {
        assert_eq!(
            clean_title("  \"Foo &quot;Bar&quot; &amp; Baz\" ").as_deref(),
            Some("Foo \"Bar\" & Baz")
        );
        assert_eq!(clean_title("x"), None);
        assert_eq!(clean_title("a <span id=\"x\">"), None);
        assert_eq!(
            clean_title(&vec!["w"; 20].join(" ")).map(|t| t.len()),
            Some(39)
        );
        assert_eq!(clean_title(&vec!["w"; 21].join(" ")), None);
        // Two spaces make an empty "word" in Python's split(" ").
        assert_eq!(
            clean_title(&format!("{}  w", vec!["w"; 19].join(" "))),
            None
        );
        assert_eq!(
            clean_title("Caf&eacute; &rdquo;"),
            Some("Caf&eacute; &rdquo;".into())
        );
        let desc = py_str(&serde_json::json!([
            "<b>Heavy</b>  duty &amp; tough",
            "It's\n<br/>fine &lt;3"
        ]));
        assert_eq!(
            desc,
            "['<b>Heavy</b>  duty &amp; tough', \"It's\\n<br/>fine &lt;3\"]"
        );
        assert_eq!(
            clean_text(&desc),
            "['Heavy duty & tough', \"It's\\nfine <3\"]"
        );
        assert_eq!(clean_text("a <> b < c"), "a <> b < c");
        assert_eq!(clean_text(" caf&eacute;\u{a0}x "), "café x");
    }
}
