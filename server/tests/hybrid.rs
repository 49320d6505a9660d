//! A checkpoint with a hybrid ranker (`hybrid.json`): `/v1/recommend` re-ranks the beam's items
//! by `log p + λ · transition score`, `/v1/model` shows the ranker, a hot swap between a pure
//! and a hybrid checkpoint switches the ranking, and a `hybrid.json` that `sidrec.json` does not
//! cover is refused. Every response is validated against `openapi/openapi.yaml`.

mod common;

use common::*;
use serde_json::{json, Value};
use sidrec::hybrid::{FittedOn, Hybrid, TransitionScorer, HYBRID_FILE};
use sidrec::testing::interaction_row as row;
use sidrec::ItemId;
use sidrec_server::HttpLimits;

const REC: &str = "/v1/recommend";

/// After item 0 comes 7 (three times), then 2 (once); after item 3 comes 5 (twice); after
/// item 1 comes 4 (once); nothing follows the other items. Items 3 and 4 share a SID.
fn ranker(lambda: f32) -> Hybrid {
    let train = [
        row(&[0], 7),
        row(&[1, 0], 7),
        row(&[0], 7),
        row(&[0], 2),
        row(&[3], 5),
        row(&[2, 3], 5),
        row(&[1], 4),
    ];
    Hybrid {
        lambda,
        prior_strength: 1.0,
        scorer: TransitionScorer::fit(&train, FIXTURE.len()),
        fitted_on: FittedOn {
            data: "fixture".into(),
            split: "train".into(),
            rows: 7,
        },
        selection: json!({"split": "valid"}),
    }
}

/// (item id, score, model score) of a recommendation.
fn ranked(body: &Value) -> Vec<(u64, f64, f64)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["item_id"].as_u64().unwrap(),
                i["score"].as_f64().unwrap(),
                i["model_score"].as_f64().unwrap(),
            )
        })
        .collect()
}

async fn recommend(s: &TestServer, req: Value) -> Value {
    let (st, body) = post_checked(s, REC, &req).await;
    assert_eq!(st, 200, "{body}");
    body
}

async fn reload(s: &TestServer) -> Value {
    let (st, b) = post_raw(s, "/admin/reload", None, Vec::new(), Some("s3cret")).await;
    assert_eq!(st, 200, "{b}");
    b
}

/// A server over `root/models` holding one pure checkpoint, `v1`: the models directory, v1's
/// version and the server.
async fn serving_v1(root: &std::path::Path) -> (std::path::PathBuf, String, TestServer) {
    let models = root.join("models");
    std::fs::create_dir(&models).unwrap();
    let staging = root.join("staging");
    let v1 = write_checkpoint(&staging, "v1");
    std::fs::rename(&staging, models.join("v1")).unwrap();
    let s = model_server(model_options(&models), HttpLimits::default()).await;
    (models, v1, s)
}

#[tokio::test]
async fn a_hybrid_checkpoint_reranks_the_beam_and_hot_swaps_with_a_pure_one() {
    let root = tempfile::tempdir().unwrap();
    let (models, v1, s) = serving_v1(root.path()).await;

    let (_, m) = get_checked(&s, "/v1/model", "/v1/model").await;
    assert!(m["hybrid"].is_null(), "{m}");
    let req = json!({"history": [3, 0], "k": 8, "num_beams": 8});
    let pure = recommend(&s, req.clone()).await;
    let pure_items = ranked(&pure);
    assert_eq!(pure_items.len(), 8);
    // Without a ranker, the list is the beam's: score is the model's, in beam order.
    assert!(pure_items.iter().all(|(_, sc, ms)| sc == ms));
    assert!(pure_items.windows(2).all(|w| w[0].1 >= w[1].1));

    // A hybrid copy of v1 (same weights), written as `sidrec-trainer hybrid` writes it. The
    // random model's log-probabilities spread widely, so a large λ lets the table decide.
    let h = ranker(1000.0);
    let meta = sidrec::checkpoint::derive(
        &models.join("v1"),
        &root.path().join("v2"),
        &[(HYBRID_FILE.into(), h.to_json().unwrap())],
        json!({"hybrid": {"lambda": 1000.0}}),
    )
    .unwrap();
    assert_ne!(meta.version, v1);
    std::fs::rename(root.path().join("v2"), models.join("v2")).unwrap();
    let b = reload(&s).await;
    assert_eq!(b["version"], meta.version.as_str(), "{b}");
    let (_, m) = get_checked(&s, "/v1/model", "/v1/model").await;
    assert_eq!(
        m["hybrid"],
        json!({"item_model": "last-item-transition", "lambda": 1000.0, "prior_strength": 1.0})
    );

    let hyb = recommend(&s, req.clone()).await;
    assert_eq!(hyb["model_version"], meta.version.as_str());
    let hyb_items = ranked(&hyb);
    // The same candidates with the same model scores, re-ranked: 7 then 2 (the followers of
    // item 0, the history's last item) lead, and every score is model + λ · transition.
    let mut a: Vec<(u64, f64)> = pure_items.iter().map(|x| (x.0, x.2)).collect();
    let mut b: Vec<(u64, f64)> = hyb_items.iter().map(|x| (x.0, x.2)).collect();
    a.sort_by_key(|x| x.0);
    b.sort_by_key(|x| x.0);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.0 == y.0 && (x.1 - y.1).abs() < 1e-4, "{a:?} vs {b:?}");
    }
    assert_eq!((hyb_items[0].0, hyb_items[1].0), (7, 2), "{hyb}");
    for &(id, score, model) in &hyb_items {
        let want = model + 1000.0 * h.scorer.score(Some(0), id as ItemId, 1.0);
        assert!((score - want).abs() < 1e-2, "{id}: {score} vs {want}");
    }
    // Items 3 and 4 share a SID: they stay together, 4 (more popular) first, even where
    // another SID's item scores between them.
    let pos = |id: u64| hyb_items.iter().position(|x| x.0 == id).unwrap();
    assert_eq!(pos(3), pos(4) + 1, "{hyb}");
    // Without the second item of that SID, the scores descend.
    let firsts: Vec<f64> = hyb_items.iter().filter(|x| x.0 != 3).map(|x| x.1).collect();
    assert!(firsts.windows(2).all(|w| w[0] >= w[1]), "{hyb}");
    // The library's function gives the server's order (beams from the pure answer: one per
    // SID, in order).
    let mut cands: Vec<sidrec::hybrid::Candidate> = Vec::new();
    for (i, x) in pure.as_object().unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let beam = match cands.last() {
            Some(_) if pure["items"][i - 1]["sid"] == x["sid"] => cands[i - 1].beam,
            Some(c) => c.beam + 1,
            None => 0,
        };
        cands.push(sidrec::hybrid::Candidate {
            item: x["item_id"].as_u64().unwrap() as ItemId,
            beam,
            model_score: x["model_score"].as_f64().unwrap() as f32,
        });
    }
    let lib: Vec<u64> = h
        .rerank(&[3, 0], &cands)
        .iter()
        .map(|r| u64::from(r.item))
        .collect();
    assert_eq!(lib, hyb_items.iter().map(|x| x.0).collect::<Vec<_>>());

    // Exclusions still hold.
    let ex = recommend(
        &s,
        json!({"history": [3, 0], "k": 5, "num_beams": 8, "exclude": [7]}),
    )
    .await;
    let ex = ranked(&ex);
    assert!(ex.iter().all(|x| x.0 != 7) && ex[0].0 == 2, "{ex:?}");
    // Items 3 and 4 share a SID, so histories ending in 3 or 4 are one prompt; their answers
    // differ (5 follows 3; nothing follows 4, so popularity puts 7 first), and the response
    // cache must not hand one the other's.
    let r3 = recommend(&s, json!({"history": [0, 3], "k": 3, "num_beams": 8})).await;
    let r4 = recommend(&s, json!({"history": [0, 4], "k": 3, "num_beams": 8})).await;
    assert_eq!(ranked(&r3)[0].0, 5, "{r3}");
    assert_eq!(ranked(&r4)[0].0, 7, "{r4}");
    // `history_sids` names SIDs: the newest SID's last item (4 for 3's and 4's SID) stands for it.
    let sid = |i: usize| FIXTURE[i].2;
    let rs = recommend(
        &s,
        json!({"history_sids": [sid(0), sid(3)], "k": 3, "num_beams": 8}),
    )
    .await;
    assert_eq!(ranked(&rs), ranked(&r4), "{rs}");

    // Back to a pure checkpoint: the beam's order again.
    let staging = root.path().join("staging3");
    let v3 = write_checkpoint(&staging, "v3");
    std::fs::rename(&staging, models.join("v3")).unwrap();
    assert_eq!(reload(&s).await["version"], v3.as_str());
    let (_, m) = get_checked(&s, "/v1/model", "/v1/model").await;
    assert!(m["hybrid"].is_null());
    let again = ranked(&recommend(&s, req).await);
    assert!(again.iter().all(|(_, sc, ms)| sc == ms));
}

#[tokio::test]
async fn a_hybrid_file_outside_the_hashes_is_refused_and_the_old_checkpoint_kept() {
    let root = tempfile::tempdir().unwrap();
    let (models, v1, s) = serving_v1(root.path()).await;
    let staging = root.path().join("staging2");
    write_checkpoint(&staging, "v2");
    std::fs::write(staging.join(HYBRID_FILE), ranker(1.0).to_json().unwrap()).unwrap();
    std::fs::rename(&staging, models.join("v2")).unwrap();
    let (st, b) = post_raw(&s, "/admin/reload", None, Vec::new(), Some("s3cret")).await;
    assert!(st >= 400, "{st} {b}");
    let (_, m) = get_checked(&s, "/v1/model", "/v1/model").await;
    assert_eq!(m["version"], v1.as_str());
    let err = m["last_reload_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(HYBRID_FILE) && err.contains("not listed"),
        "{m}"
    );
}
