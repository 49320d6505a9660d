//! Optional prompt tokens at serving time: `user_segment` and `context` of a recommendation
//! request reach the prompt of a checkpoint trained with them, are validated (a 4xx naming the
//! field), and leave a checkpoint without them unaffected. Every response is validated against
//! `openapi/openapi.yaml`.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};
use sidrec::prompt::{PromptContext, PromptTokens, RequestContext, TokenGroup, UserSegment};
use sidrec_server::HttpLimits;

const REC: &str = "/v1/recommend";

async fn serve(root: &Path, tokens: PromptTokens) -> TestServer {
    let models = root.join("models");
    std::fs::create_dir(&models).unwrap();
    let staging = root.join("staging");
    write_checkpoint_with(&staging, "v1", tokens);
    std::fs::rename(&staging, models.join("v1")).unwrap();
    model_server(model_options(&models), HttpLimits::default()).await
}

fn items(body: &Value) -> Vec<(u64, f64)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["item_id"].as_u64().unwrap(), i["score"].as_f64().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_checkpoint_with_tokens_reads_segment_and_context_from_the_request() {
    let root = tempfile::tempdir().unwrap();
    let all = PromptTokens::new(&TokenGroup::ALL);
    let s = serve(root.path(), all).await;
    let (st, m) = get_checked(&s, "/v1/model", "/v1/model").await;
    assert_eq!(st, 200);
    assert_eq!(m["prompt_tokens"], json!(["user", "context", "item-type"]));

    let (st, high) = post_checked(
        &s,
        REC,
        &json!({"history": [0, 2], "k": 8, "user_segment": "high", "context": "search"}),
    )
    .await;
    assert_eq!(st, 200, "{high}");
    let (st, low) = post_checked(
        &s,
        REC,
        &json!({"history": [0, 2], "k": 8, "user_segment": "low", "context": "search"}),
    )
    .await;
    assert_eq!(st, 200, "{low}");
    // Another user token is another prompt, so other scores.
    assert_ne!(items(&high), items(&low));

    // The prompt the engine builds: the tokens of the request (defaults when absent) and the
    // item types of the checkpoint's item table, for item ids and SIDs alike.
    let engine = s.state.engine().unwrap();
    let ctx = PromptContext {
        user: UserSegment::High,
        context: RequestContext::Search,
    };
    let p = engine.prompts().recommend(&[0, 2], &ctx).unwrap();
    assert_eq!(
        p.text,
        "[USER_HIGH] [CTX_SEARCH] history: [I_TOKEN]<a_1><b_2><c_3> [O_TOKEN]<a_2><b_0><c_0>\nnext:\n"
    );
    let sids = [
        "<a_1><b_2><c_3>".parse().unwrap(),
        "<a_2><b_0><c_0>".parse().unwrap(),
    ];
    assert_eq!(engine.encode(&sids, 50, &ctx).unwrap(), p.ids);
    assert_eq!(engine.encode_items(&[0, 2], 50, &ctx).unwrap(), p.ids);
    let plain = engine
        .prompts()
        .recommend(&[0, 2], &PromptContext::default())
        .unwrap();
    assert!(plain
        .text
        .starts_with("[USER_UNKNOWN] [CTX_HOMEPAGE] history:"));

    // Values outside the closed enums: 422 naming the field; wrong types: 400 naming it.
    for (body, status, field) in [
        (
            json!({"history": [0], "user_segment": "vip"}),
            422,
            "user_segment",
        ),
        (json!({"history": [0], "context": "email"}), 422, "context"),
        (
            json!({"history": [0], "user_segment": 3}),
            400,
            "user_segment",
        ),
        (json!({"history": [0], "context": null}), 400, "context"),
    ] {
        let (st, b) = post_checked(&s, REC, &body).await;
        assert_eq!(st, status, "{body}: {b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
    // Batch entries carry them too.
    let (st, b) = post_checked(
        &s,
        "/v1/recommend/batch",
        &json!({"requests": [{"history": [0], "user_segment": "mid"}, {"history": [0], "user_segment": "?"}]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert!(b["results"][0]["items"].is_array(), "{b}");
    assert_eq!(b["results"][1]["error"]["field"], "user_segment", "{b}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_checkpoint_without_tokens_accepts_and_ignores_them() {
    let root = tempfile::tempdir().unwrap();
    let s = serve(root.path(), PromptTokens::none()).await;
    let (_, m) = get_checked(&s, "/v1/model", "/v1/model").await;
    assert_eq!(m["prompt_tokens"], json!([]));
    let meta = std::fs::read_to_string(root.path().join("models/v1/sidrec.json")).unwrap();
    assert!(
        !meta.contains("prompt_tokens"),
        "a plain checkpoint's sidrec.json stays as before: {meta}"
    );
    let (st, plain) = post_checked(&s, REC, &json!({"history": [0, 2], "k": 8})).await;
    assert_eq!(st, 200, "{plain}");
    let (st, with) = post_checked(
        &s,
        REC,
        &json!({"history": [0, 2], "k": 8, "user_segment": "high", "context": "browse"}),
    )
    .await;
    assert_eq!(st, 200, "{with}");
    assert_eq!(items(&plain), items(&with));
    let engine = s.state.engine().unwrap();
    let p = engine
        .prompts()
        .recommend(
            &[0, 2],
            &PromptContext {
                user: UserSegment::High,
                context: RequestContext::Browse,
            },
        )
        .unwrap();
    assert_eq!(p.text, "history: <a_1><b_2><c_3> <a_2><b_0><c_0>\nnext:\n");
    // Invalid values are still refused: the contract does not depend on the checkpoint.
    let (st, b) = post_checked(&s, REC, &json!({"history": [0], "context": "tv"})).await;
    assert_eq!((st, b["error"]["field"].as_str()), (422, Some("context")));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_checkpoint_with_a_history_limit_serves_only_the_latest_items() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let staging = root.path().join("staging");
    write_checkpoint(&staging, "v1");
    // What `sft --max-history 1` records; sidrec.json is not among the hashed files.
    let meta_path = staging.join("sidrec.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["max_history"] = json!(1);
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    std::fs::rename(&staging, models.join("v1")).unwrap();
    let s = model_server(model_options(&models), HttpLimits::default()).await;

    let (st, m) = get_checked(&s, "/v1/model", "/v1/model").await;
    assert_eq!(st, 200);
    assert_eq!(m["max_history"], 1, "{m}");
    let (st, long) = post_checked(&s, REC, &json!({"history": [0, 1, 2], "k": 8})).await;
    assert_eq!(st, 200, "{long}");
    let (st, last) = post_checked(&s, REC, &json!({"history": [2], "k": 8})).await;
    assert_eq!(st, 200, "{last}");
    assert_eq!(items(&long), items(&last));
    let engine = s.state.engine().unwrap();
    let p = engine
        .prompts()
        .recommend(&[0, 1, 2], &PromptContext::default())
        .unwrap();
    assert_eq!(p.text, "history: <a_2><b_0><c_0>\nnext:\n");
    s.stop().await.unwrap();
}
