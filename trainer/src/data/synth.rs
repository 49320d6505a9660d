//! `data synth`: the embedded default dataset.
//!
//! **Catalogue.** Items are drawn from a product grammar ([`super::synth_grammar`]): a category,
//! a product type of that category, a brand that sells in the category (some brands span several),
//! and attribute slots (sizes, materials, colours, pack counts, model numbers) filled into the
//! type's title template, so titles read like "Kestrel 18-Gauge Stainless Steel Brad Nails,
//! 1-1/4 Inch (5000-Pack)". Each item also gets a two-sentence description (stored, as MiniOneRec
//! stores descriptions, as a Python list literal), `brand` and `categories` fields, and a
//! popularity weight (Zipf-like within its type).
//!
//! **Users.** Each user has a few favourite categories (the affinity drifts over time), becomes
//! loyal to the brand first bought in a category, and moves between items along a complementary
//! product-type graph (nailer → brad nails → safety glasses): each item has a few specific
//! companions per next type (same brand first), as compatible accessories do. Users also re-buy
//! consumables and sometimes buy what is popular. Interactions are time-stamped (a random start in
//! 2017–2018 and exponential gaps), 5–30 per user.
//!
//! **Samples and split** follow the reference exactly ([`super::samples`]).
//!
//! **SIDs.** `sid_index.json` holds *grammar SIDs*: level `a` = category, `b` = product type within
//! the category, `c` = the item's place within its type (ordered by brand, then id, modulo 256),
//! and a level `d` only for items whose first three codes would otherwise collide. They come from
//! the catalogue's structure, not from any model of the users, so they are an oracle-free
//! structural index that makes the files complete MiniOneRec-format splits; `trainer sid` (a later
//! stage) replaces them with learned SIDs.
//!
//! Everything is a function of the seed (ChaCha8; only ordered collections feed the output).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand::distributions::{Distribution, WeightedIndex};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sidrec::data::info::{self, InfoLine};
use sidrec::data::pylit::repr_str_list;
use sidrec::data::{DatasetFiles, ItemMeta, Items};
use sidrec::{ItemId, Sid, SidIndex};

use super::samples::{self, UserSequence};
use super::synth_grammar::{BrandDef, TypeDef, BRANDS, CATEGORIES};
use crate::cli::SynthArgs;
use crate::error::{Result, TrainerError};
use crate::progress;

/// Sizes and seed of a synthetic dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthConfig {
    /// Items in the catalogue.
    pub items: usize,
    /// Users.
    pub users: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            items: 3000,
            users: 4000,
            seed: 42,
        }
    }
}

/// Shortest and longest user sequence.
pub const SEQ_LEN: (usize, usize) = (5, 30);
/// 2017-01-01T00:00:00Z: the first possible interaction.
const T0: i64 = 1_483_228_800;
/// Days over which users start.
const START_SPAN_DAYS: f64 = 480.0;
/// Mean gap between a user's interactions, in days.
const MEAN_GAP_DAYS: f64 = 6.0;
/// Codes per SID level (as the reference's 256-entry codebooks).
const CODEBOOK: u32 = 256;

/// Probabilities of the next-item behaviours (cumulative order: repeat, complement, popular,
/// otherwise explore the user's categories).
const P_REPEAT: f64 = 0.10;
const P_COMPLEMENT: f64 = 0.55;
const P_POPULAR: f64 = 0.10;
/// Chance to take one of the last item's specific companions when following the type graph.
const P_COMPANION: f64 = 0.6;
/// Chance to stay with the user's brand in a category when it sells the chosen type.
const P_BRAND_LOYAL: f64 = 0.6;
/// Chance, per exploring step, that one favourite category is replaced by another.
const P_DRIFT: f64 = 0.2;

/// One product type, flattened over categories.
struct TypeInfo {
    category: usize,
    /// Position within the category.
    local: usize,
    def: &'static TypeDef,
    /// Global indices of `def.next`, in order.
    next: Vec<usize>,
}

/// One synthesized item.
#[derive(Debug, Clone)]
pub struct SynthItem {
    /// Item id.
    pub id: ItemId,
    /// Global product-type index.
    pub ptype: usize,
    /// Category index.
    pub category: usize,
    /// Brand index.
    pub brand: usize,
    /// Title.
    pub title: String,
    /// Popularity weight within its type.
    pub weight: f64,
}

/// The generated catalogue and its lookup tables.
struct Catalogue {
    types: Vec<TypeInfo>,
    items: Vec<SynthItem>,
    by_type: Vec<Vec<ItemId>>,
    by_type_brand: BTreeMap<(usize, usize), Vec<ItemId>>,
    /// `companions[item][j]`: items of the item's `j`-th next type that go with it.
    companions: Vec<Vec<Vec<ItemId>>>,
    metas: Items,
}

fn flatten_types() -> Result<Vec<TypeInfo>> {
    let mut types = Vec::new();
    let mut key_index = BTreeMap::new();
    for (c, cat) in CATEGORIES.iter().enumerate() {
        for (l, def) in cat.types.iter().enumerate() {
            key_index.insert(def.key, types.len());
            types.push(TypeInfo {
                category: c,
                local: l,
                def,
                next: Vec::new(),
            });
        }
    }
    for t in &mut types {
        for k in t.def.next {
            let j = key_index.get(k).ok_or_else(|| {
                TrainerError::Invalid(format!(
                    "synth grammar: `{}` → unknown type `{k}`",
                    t.def.key
                ))
            })?;
            t.next.push(*j);
        }
    }
    Ok(types)
}

/// Fill `{slot}`s of `template`.
fn fill(template: &str, brand: &BrandDef, model: &str, rng: &mut ChaCha8Rng) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| {
            TrainerError::Invalid(format!("synth grammar: unclosed slot in `{template}`"))
        })?;
        let slot = &rest[open + 1..close];
        match slot {
            "brand" => out.push_str(brand.name),
            "model" => out.push_str(model),
            _ => {
                let values = super::synth_grammar::slot_values(slot).ok_or_else(|| {
                    TrainerError::Invalid(format!(
                        "synth grammar: unknown slot `{slot}` in `{template}`"
                    ))
                })?;
                out.push_str(values[rng.gen_range(0..values.len())]);
            }
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Pick from `ids` with probability proportional to `weight`.
fn pick_weighted(
    ids: &[ItemId],
    weight: impl Fn(ItemId) -> f64,
    rng: &mut ChaCha8Rng,
) -> Option<ItemId> {
    let w: Vec<f64> = ids.iter().map(|&i| weight(i)).collect();
    let dist = WeightedIndex::new(&w).ok()?;
    Some(ids[dist.sample(rng)])
}

fn build_catalogue(n: usize, rng: &mut ChaCha8Rng) -> Result<Catalogue> {
    let types = flatten_types()?;
    // How many items each type gets: proportional to a random size, at least one while possible.
    let sizes: Vec<f64> = types.iter().map(|_| rng.gen_range(0.5..1.5)).collect();
    let total: f64 = sizes.iter().sum();
    let mut counts: Vec<usize> = sizes
        .iter()
        .map(|s| ((s / total) * n as f64).floor() as usize)
        .collect();
    let mut t = 0;
    while counts.iter().sum::<usize>() < n {
        counts[t % types.len()] += 1;
        t += 1;
    }
    // Item ids in a shuffled type order so that ids carry no structure.
    let mut slots: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(t, &c)| std::iter::repeat_n(t, c))
        .collect();
    slots.shuffle(rng);
    let brand_size: Vec<f64> = BRANDS.iter().map(|_| rng.gen_range(0.4..2.0)).collect();

    let mut items = Vec::with_capacity(n);
    let mut metas = Items::new();
    let mut titles = BTreeSet::new();
    let mut models = BTreeSet::new();
    for (id, &ty) in slots.iter().enumerate() {
        let id = id as ItemId;
        let info = &types[ty];
        let cat = info.category;
        let brands: Vec<usize> = (0..BRANDS.len())
            .filter(|&b| BRANDS[b].categories.contains(&cat))
            .collect();
        let bdist = WeightedIndex::new(brands.iter().map(|&b| brand_size[b]))
            .map_err(|e| TrainerError::Invalid(format!("synth grammar: category {cat}: {e}")))?;
        let brand = brands[bdist.sample(rng)];
        let bdef = &BRANDS[brand];
        let mut model = String::new();
        for _ in 0..100 {
            model = format!("{}-{}", bdef.code, rng.gen_range(100..10000));
            if models.insert(model.clone()) {
                break;
            }
        }
        let mut title = fill(info.def.template, bdef, &model, rng)?;
        for _ in 0..20 {
            if !titles.contains(&title) {
                break;
            }
            title = fill(info.def.template, bdef, &model, rng)?;
        }
        if titles.contains(&title) {
            title = format!("{title}, {model}");
        }
        titles.insert(title.clone());
        let first = format!(
            "{} {} designed for {}.",
            bdef.name, info.def.noun, info.def.use_for
        );
        let second = match rng.gen_range(0..4) {
            0 => format!("Model {model}; backed by a one-year limited warranty."),
            1 => format!("Built to professional standards; model {model}."),
            2 => "Ships in retail packaging.".to_string(),
            _ => format!(
                "Part of the {} {} line.",
                bdef.name,
                CATEGORIES[cat].name.to_lowercase()
            ),
        };
        let mut meta = ItemMeta::new(title.clone(), repr_str_list(&[first, second]));
        meta.extra.insert("brand".into(), bdef.name.into());
        meta.extra.insert(
            "categories".into(),
            format!(
                "Industrial & Scientific,{},{}",
                CATEGORIES[cat].name,
                capitalize(info.def.noun)
            )
            .into(),
        );
        metas.insert(id, meta);
        items.push(SynthItem {
            id,
            ptype: ty,
            category: cat,
            brand,
            title,
            weight: 0.0,
        });
    }

    let mut by_type: Vec<Vec<ItemId>> = vec![Vec::new(); types.len()];
    let mut by_type_brand: BTreeMap<(usize, usize), Vec<ItemId>> = BTreeMap::new();
    for it in &items {
        by_type[it.ptype].push(it.id);
        by_type_brand
            .entry((it.ptype, it.brand))
            .or_default()
            .push(it.id);
    }
    // Zipf-like popularity within each type, in a random order.
    for ids in &by_type {
        let mut order = ids.clone();
        order.shuffle(rng);
        for (r, &i) in order.iter().enumerate() {
            items[i as usize].weight = 1.0 / ((r + 1) as f64).powf(0.9);
        }
    }
    // Companions: up to two same-brand items of each next type, then one popular item of it.
    let mut companions = Vec::with_capacity(items.len());
    for it in &items {
        let mut per_next = Vec::new();
        for &nt in &types[it.ptype].next {
            let mut chosen: Vec<ItemId> = Vec::new();
            if let Some(same) = by_type_brand.get(&(nt, it.brand)) {
                for _ in 0..2 {
                    let rest: Vec<ItemId> = same
                        .iter()
                        .copied()
                        .filter(|i| !chosen.contains(i))
                        .collect();
                    if let Some(p) = pick_weighted(&rest, |i| items[i as usize].weight, rng) {
                        chosen.push(p);
                    }
                }
            }
            let rest: Vec<ItemId> = by_type[nt]
                .iter()
                .copied()
                .filter(|i| !chosen.contains(i))
                .collect();
            if let Some(p) = pick_weighted(&rest, |i| items[i as usize].weight, rng) {
                chosen.push(p);
            }
            per_next.push(chosen);
        }
        companions.push(per_next);
    }
    Ok(Catalogue {
        types,
        items,
        by_type,
        by_type_brand,
        companions,
        metas,
    })
}

fn capitalize(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match (c.next(), c.clone().next()) {
                // Keep words such as "pH" and "PTFE" as they are.
                (Some(f), Some(g)) if g.is_uppercase() => std::iter::once(f).chain(c).collect(),
                (Some(f), _) => f.to_uppercase().chain(c).collect(),
                (None, _) => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A user's evolving tastes.
struct UserState {
    /// Favourite categories and their weights.
    affinity: Vec<(usize, f64)>,
    /// Brand first bought in each category.
    brand: BTreeMap<usize, usize>,
}

impl Catalogue {
    fn weight(&self, i: ItemId) -> f64 {
        self.items[i as usize].weight
    }

    /// An item of type `t`: the user's brand when loyal, else by popularity.
    fn pick_in_type(&self, t: usize, user: &UserState, rng: &mut ChaCha8Rng) -> Option<ItemId> {
        let cat = self.types[t].category;
        if let Some(ids) = user
            .brand
            .get(&cat)
            .and_then(|b| self.by_type_brand.get(&(t, *b)))
        {
            if rng.gen_bool(P_BRAND_LOYAL) {
                return pick_weighted(ids, |i| self.weight(i), rng);
            }
        }
        pick_weighted(&self.by_type[t], |i| self.weight(i), rng)
    }

    /// Follow the complementary-type graph from `last`.
    fn complement(&self, last: ItemId, user: &UserState, rng: &mut ChaCha8Rng) -> Option<ItemId> {
        let it = &self.items[last as usize];
        let next = &self.types[it.ptype].next;
        let options: Vec<usize> = (0..next.len())
            .filter(|&j| !self.by_type[next[j]].is_empty())
            .collect();
        // Earlier next types are likelier: weights 1, 1/2, 1/3, ...
        let dist = WeightedIndex::new(options.iter().map(|&j| 1.0 / (j + 1) as f64)).ok()?;
        let j = options[dist.sample(rng)];
        let comp = &self.companions[last as usize][j];
        if !comp.is_empty() && rng.gen_bool(P_COMPANION) {
            let w = [0.6, 0.25, 0.15];
            let dist = WeightedIndex::new(&w[..comp.len()]).ok()?;
            return Some(comp[dist.sample(rng)]);
        }
        self.pick_in_type(next[j], user, rng)
    }

    /// Browse one of the user's favourite categories.
    fn explore(&self, user: &mut UserState, rng: &mut ChaCha8Rng) -> Option<ItemId> {
        if rng.gen_bool(P_DRIFT) {
            let k = rng.gen_range(0..user.affinity.len());
            user.affinity[k].0 = rng.gen_range(0..CATEGORIES.len());
        }
        let dist = WeightedIndex::new(user.affinity.iter().map(|a| a.1)).ok()?;
        let cat = user.affinity[dist.sample(rng)].0;
        let types: Vec<usize> = (0..self.types.len())
            .filter(|&t| self.types[t].category == cat && !self.by_type[t].is_empty())
            .collect();
        let t = *types.choose(rng)?;
        self.pick_in_type(t, user, rng)
    }
}

/// Generate one user's time-sorted interactions.
fn simulate_user(
    cat: &Catalogue,
    popular: &WeightedIndex<f64>,
    uid: usize,
    rng: &mut ChaCha8Rng,
) -> UserSequence {
    let mut favs: Vec<usize> = (0..CATEGORIES.len()).collect();
    favs.shuffle(rng);
    let mut user = UserState {
        affinity: vec![(favs[0], 0.6), (favs[1], 0.3), (favs[2], 0.1)],
        brand: BTreeMap::new(),
    };
    let extra = (-(1.0 - rng.gen::<f64>()).ln() * 7.0) as usize;
    let len = (SEQ_LEN.0 + extra).min(SEQ_LEN.1);
    let mut t = T0 + (rng.gen::<f64>() * START_SPAN_DAYS * 86_400.0) as i64;
    let mut events: Vec<(ItemId, i64)> = Vec::with_capacity(len);
    while events.len() < len {
        let last = events.last().map(|e| e.0);
        let r: f64 = rng.gen();
        let choice = match last {
            None => None,
            Some(l) if r < P_REPEAT => {
                let consumable = |i: ItemId| cat.types[cat.items[i as usize].ptype].def.consumable;
                if consumable(l) {
                    Some(l)
                } else {
                    let past: Vec<ItemId> = events
                        .iter()
                        .map(|e| e.0)
                        .filter(|&i| consumable(i))
                        .collect();
                    past.choose(rng).copied()
                }
            }
            Some(l) if r < P_REPEAT + P_COMPLEMENT => cat.complement(l, &user, rng),
            Some(_) if r < P_REPEAT + P_COMPLEMENT + P_POPULAR => {
                Some(popular.sample(rng) as ItemId)
            }
            Some(_) => None,
        };
        let Some(item) = choice.or_else(|| cat.explore(&mut user, rng)) else {
            // Only possible for tiny catalogues: fall back to a popular item.
            let item = popular.sample(rng) as ItemId;
            events.push((item, t));
            continue;
        };
        let it = &cat.items[item as usize];
        user.brand.entry(it.category).or_insert(it.brand);
        events.push((item, t));
        let gap_days = -(1.0 - rng.gen::<f64>()).ln() * MEAN_GAP_DAYS;
        t += ((gap_days * 86_400.0) as i64).max(3_600);
    }
    UserSequence {
        user_id: format!("A{uid}"),
        events,
    }
}

/// Grammar SIDs (see the module docs).
fn grammar_index(cat: &Catalogue) -> SidIndex {
    let mut codes: BTreeMap<ItemId, Vec<u32>> = BTreeMap::new();
    for (t, ids) in cat.by_type.iter().enumerate() {
        let mut ordered = ids.clone();
        ordered.sort_by_key(|&i| (cat.items[i as usize].brand, i));
        let info = &cat.types[t];
        for (pos, i) in ordered.into_iter().enumerate() {
            codes.insert(
                i,
                vec![
                    info.category as u32,
                    info.local as u32,
                    pos as u32 % CODEBOOK,
                ],
            );
        }
    }
    let mut groups: BTreeMap<Vec<u32>, Vec<ItemId>> = BTreeMap::new();
    for (&i, c) in &codes {
        groups.entry(c.clone()).or_default().push(i);
    }
    let mut index = SidIndex::new();
    for (c, ids) in groups {
        for (d, &i) in ids.iter().enumerate() {
            let mut c = c.clone();
            if ids.len() > 1 {
                c.push(d as u32);
            }
            index.insert(i, Sid::from_codes(c));
        }
    }
    index
}

/// A synthesized dataset, ready to be written.
#[derive(Debug, Clone)]
pub struct SynthDataset {
    /// Splits, items and the grammar SID index.
    pub files: DatasetFiles,
    /// Info lines (`SID<TAB>title<TAB>id`), one per item in id order.
    pub info: Vec<InfoLine>,
    /// The catalogue's items.
    pub items: Vec<SynthItem>,
    /// Every user's sequence (oldest first).
    pub users: Vec<UserSequence>,
}

/// Generate a dataset.
pub fn synthesize(cfg: SynthConfig, show_progress: bool) -> Result<SynthDataset> {
    if cfg.items == 0 || cfg.users == 0 {
        return Err(TrainerError::Invalid(
            "data synth: --items and --users must be at least 1".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let cat = build_catalogue(cfg.items, &mut rng)?;
    let n_types = cat.types.len() as f64;
    let popular = WeightedIndex::new(
        cat.items
            .iter()
            .map(|it| it.weight / (cat.by_type[it.ptype].len().max(1) as f64).powf(0.3) / n_types),
    )
    .map_err(|e| TrainerError::Invalid(format!("data synth: {e}")))?;
    let mut user_rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    user_rng.set_stream(1);
    let pb = progress::bar(cfg.users as u64, "simulating users");
    if !show_progress {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut users = Vec::with_capacity(cfg.users);
    for u in 0..cfg.users {
        users.push(simulate_user(&cat, &popular, u, &mut user_rng));
        pb.inc(1);
    }
    pb.finish_and_clear();

    let index = grammar_index(&cat);
    let split = samples::build_and_split(&users);
    let rows = |s: &[samples::Sample]| samples::to_rows(s, &users, &cat.metas, Some(&index));
    let files = DatasetFiles {
        train: rows(&split.train),
        valid: rows(&split.valid),
        test: rows(&split.test),
        items: cat.metas.clone(),
        index: Some(index.clone()),
    };
    let info = index
        .iter()
        .map(|(id, sid)| InfoLine {
            sid: sid.clone(),
            title: cat
                .metas
                .get(&id)
                .map(|m| m.title.clone())
                .unwrap_or_default(),
            item_id: id,
        })
        .collect();
    Ok(SynthDataset {
        files,
        info,
        items: cat.items,
        users,
    })
}

/// Write a synthesized dataset into `dir`; returns the written paths.
pub fn write(ds: &SynthDataset, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut written = ds.files.write(dir)?;
    let p = dir.join(sidrec::data::dataset::names::INFO);
    info::write_info(&p, &ds.info)?;
    written.push(p);
    Ok(written)
}

/// `sidrec-trainer data synth`.
pub fn run(args: &SynthArgs) -> Result<()> {
    let cfg = SynthConfig {
        items: args.items,
        users: args.users,
        seed: args.seed,
    };
    let ds = synthesize(cfg, true)?;
    let written = write(&ds, &args.out)?;
    println!(
        "synthesized {} items, {} users: train {} / valid {} / test {} rows (seed {})",
        ds.files.items.len(),
        ds.users.len(),
        ds.files.train.len(),
        ds.files.valid.len(),
        ds.files.test.len(),
        cfg.seed
    );
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_is_consistent() {
        let types = flatten_types().unwrap();
        assert!(types.len() >= 50);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for (c, cat) in CATEGORIES.iter().enumerate() {
            let brands: Vec<_> = BRANDS
                .iter()
                .filter(|b| b.categories.contains(&c))
                .collect();
            assert!(
                brands.len() >= 2,
                "{} has {} brands",
                cat.name,
                brands.len()
            );
            for t in cat.types {
                let title = fill(t.template, brands[0], "XX-1", &mut rng).unwrap();
                assert!(!title.contains('{'), "{title}");
            }
        }
        assert!(BRANDS.iter().any(|b| b.categories.len() > 2));
    }

    #[test]
    fn grammar_sids_are_unique() {
        let ds = synthesize(
            SynthConfig {
                items: 900,
                users: 20,
                seed: 3,
            },
            false,
        )
        .unwrap();
        let idx = ds.files.index.as_ref().unwrap();
        let sids: BTreeSet<String> = idx.iter().map(|(_, s)| s.to_string()).collect();
        assert_eq!(sids.len(), 900);
    }
}
