//! Test helpers: a dataset fixture, an in-process server on 127.0.0.1, and validation of
//! responses against `openapi/openapi.yaml`.
#![allow(dead_code)]

pub mod redis;

use std::path::Path;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sidrec::data::{DatasetFiles, ItemMeta};
use sidrec::{Sid, SidIndex};
use sidrec_server::{app, serve, AppState, HttpLimits, LoadedCatalogue};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The fixture's items: (id, title, SID). Items 3 and 4 share a SID; 0 and 5 share a title up
/// to case and whitespace; 6 has no title.
pub const FIXTURE: &[(u32, &str, &str)] = &[
    (0, "Patty Paper 500 Sheets", "<a_1><b_2><c_3>"),
    (1, "Stainless Steel Door Hinge", "<a_1><b_2><c_4>"),
    (2, "Wax Paper Roll, 75 ft", "<a_2><b_0><c_0>"),
    (3, "Digital Caliper 6 inch", "<a_3><b_1><c_7>"),
    (4, "Digital Caliper 150 mm", "<a_3><b_1><c_7>"),
    (5, "patty  paper 500 sheets", "<a_4><b_4><c_4>"),
    (6, "", "<a_5><b_5><c_5>"),
    (7, "Nitrile Gloves, Large, 100 pack", "<a_6><b_0><c_1>"),
];

/// Write the fixture dataset (items + SID index, empty splits) into `dir`.
pub fn write_fixture(dir: &Path) {
    let mut files = DatasetFiles::default();
    let mut index = SidIndex::new();
    for &(id, title, sid) in FIXTURE {
        files
            .items
            .insert(id, ItemMeta::new(title, "a description"));
        index.insert(id, sid.parse::<Sid>().unwrap());
    }
    files.index = Some(index);
    files.write(dir).unwrap();
}

/// A server running in this process on 127.0.0.1 (random port), stopped on drop.
pub struct TestServer {
    pub base: String,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(state: AppState, limits: HttpLimits) -> Self {
        let router = app(state.clone(), limits);
        Self::start_router(state, router).await
    }

    /// Serve an arbitrary router (e.g. the real routes plus a test route).
    pub async fn start_router(state: AppState, router: axum::Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, router, async {
            let _ = rx.await;
        }));
        Self {
            base,
            state,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// A server over the catalogue of `dir`.
    pub async fn over(dir: &Path) -> Self {
        let state = AppState::with_catalogue(LoadedCatalogue::load(dir).unwrap());
        Self::start(state, HttpLimits::default()).await
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// Graceful stop; returns the serve result.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP client that never uses a proxy (all traffic stays on 127.0.0.1).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The OpenAPI document as JSON.
pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = include_str!("../../../openapi/openapi.yaml");
        serde_yaml_ng::from_str(text).expect("openapi.yaml parses")
    })
}

/// Follow a local `#/...` reference inside the OpenAPI document.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.strip_prefix('#').expect("local ref");
            deref(
                doc,
                doc.pointer(ptr).unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => v,
    }
}

/// A JSON Schema 2020-12 validator for `schema`, with the document's components embedded so
/// that `#/components/schemas/...` references resolve.
pub fn validator(schema: &Value) -> jsonschema::Validator {
    let doc = openapi();
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

/// The documented response of `method path` for `status`: its declared object.
pub fn documented_response(method: &str, path: &str, status: u16) -> &'static Value {
    let doc = openapi();
    let op = doc["paths"]
        .get(path)
        .and_then(|p| p.get(method.to_lowercase()))
        .unwrap_or_else(|| panic!("{method} {path} is not in openapi.yaml"));
    let resp = op["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {path}: status {status} is not documented"));
    deref(doc, resp)
}

/// Check a JSON body against the schema documented for `method path status`, and the headers
/// the contract requires (`Retry-After` where documented as required, `x-request-id`).
pub fn check_contract(
    method: &str,
    path: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
) {
    let doc = openapi();
    let resp = documented_response(method, path, status);
    let schema = &resp["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} {status}: no application/json schema documented"
    );
    let v = validator(schema);
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: body {body} breaks the contract: {errors:?}"
    );
    if let Some(hs) = resp.get("headers").and_then(Value::as_object) {
        for (name, h) in hs {
            let h = deref(doc, h);
            if h.get("required") == Some(&Value::Bool(true)) {
                assert!(
                    headers.contains_key(name.as_str()),
                    "{method} {path} {status}: required header {name} missing"
                );
            }
        }
    }
    assert!(headers.contains_key("x-request-id"), "no x-request-id");
}

/// Check a body against a named component schema.
pub fn check_schema(name: &str, body: &Value) {
    let v = validator(&json!({ "$ref": format!("#/components/schemas/{name}") }));
    let errors: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{body} is not a valid {name}: {errors:?}"
    );
}

/// GET `path_and_query`, check the answer against the contract of `route`, return status+body.
pub async fn get_checked(server: &TestServer, route: &str, path_and_query: &str) -> (u16, Value) {
    let resp = client()
        .get(server.url(path_and_query))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let ct = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{path_and_query}: content-type {ct}"
    );
    let body: Value = resp.json().await.unwrap();
    check_contract("GET", route, status, &headers, &body);
    if status >= 400 {
        check_schema("ErrorBody", &body);
    }
    (status, body)
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap()
}

/// Write a tiny random-weight checkpoint of the fixture catalogue into `dir` (atomically, as
/// the trainer does); `stage` tells checkpoints apart. Returns its version.
pub fn write_checkpoint(dir: &Path, stage: &str) -> String {
    write_checkpoint_with(dir, stage, sidrec::prompt::PromptTokens::none())
}

/// [`write_checkpoint`] whose prompts carry `tokens` (items 0 and 1 of type `I`, the rest `O`).
pub fn write_checkpoint_with(
    dir: &Path,
    stage: &str,
    tokens: sidrec::prompt::PromptTokens,
) -> String {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use sidrec::checkpoint::{self, NewCheckpoint};
    use sidrec::data::Items;
    use sidrec::model::{Qwen2, Qwen2Config, TokenIds};
    use sidrec::prompt::{self, PromptStyle};
    use sidrec::tokenizer::SidTokenizer;

    let mut index = SidIndex::new();
    let mut items = Items::new();
    for &(id, title, sid) in FIXTURE {
        let mut meta = ItemMeta::new(title, "a description");
        if !tokens.is_empty() {
            let t = if id < 2 { "I" } else { "O" };
            meta.extra
                .insert(sidrec::prompt::ITEM_TYPE_FIELD.into(), t.into());
        }
        items.insert(id, meta);
        index.insert(id, sid.parse::<Sid>().unwrap());
    }
    let sids: Vec<String> = FIXTURE.iter().map(|f| f.2.to_string()).collect();
    let mut corpus = Vec::new();
    for a in &sids {
        for b in &sids {
            let p = prompt::sft_seqrec(PromptStyle::Compact, &[a.as_str()], b);
            corpus.push(p.text() + &p.response);
        }
    }
    let mut tokenizer = SidTokenizer::train_bpe(corpus.iter(), 300, &index).unwrap();
    tokenizer.add_prompt_tokens(&tokens).unwrap();
    let mut cfg = Qwen2Config::tiny(tokenizer.vocab_size());
    cfg.max_position_embeddings = 1024;
    cfg.bos_token_id = Some(tokenizer.eos_id());
    cfg.eos_token_id = Some(TokenIds::One(tokenizer.eos_id()));
    let varmap = VarMap::new();
    let model = Qwen2::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let meta = checkpoint::write(
        dir,
        &NewCheckpoint {
            model: &model,
            tokenizer: &tokenizer,
            index: &index,
            items: &items,
            prompt_style: PromptStyle::Compact,
            stage,
            collision_policy: "as-indexed",
            data_fingerprint: None,
            metrics: json!({"hr@10": 0.25, "valid": {"ndcg@10": 0.125}}),
            score_mode: None,
            prompt_tokens: tokens,
            max_history: None,
            item_window: None,
            extra_files: Vec::new(),
        },
    )
    .unwrap();
    meta.version
}

/// Options of a model server over `model_dir` (tests tune the batcher and deadline).
pub fn model_options(model_dir: &Path) -> sidrec_server::ServerOptions {
    sidrec_server::ServerOptions {
        model: Some(sidrec_server::ModelOptions {
            dir: model_dir.to_path_buf(),
            device: candle_core::Device::Cpu,
            mode: Some(sidrec::decode::ScoreMode::Exact),
            batcher: sidrec_server::engine::batcher::BatcherConfig::default(),
            beams: sidrec_server::engine::BeamLimits::default(),
            reload_allow: Vec::new(),
        }),
        admin_token: Some("s3cret".into()),
        ..sidrec_server::ServerOptions::default()
    }
}

/// A model server for `options`, with its first checkpoint loaded (as the watcher's first
/// tick does).
pub async fn model_server(options: sidrec_server::ServerOptions, limits: HttpLimits) -> TestServer {
    let state = AppState::with_options(options).unwrap();
    sidrec_server::engine::reload::check_once(&state).await;
    assert!(state.engine().is_some(), "{:?}", state.reload_status());
    TestServer::start(state, limits).await
}

/// POST a JSON body to `path`, check the answer against the contract, return status + body.
pub async fn post_checked(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    post_raw(
        server,
        path,
        Some("application/json"),
        body.to_string().into_bytes(),
        None,
    )
    .await
}

/// POST raw bytes with an optional content type and bearer token; contract-checked.
pub async fn post_raw(
    server: &TestServer,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    bearer: Option<&str>,
) -> (u16, Value) {
    let mut req = client().post(server.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    check_contract("POST", path, status, &headers, &body);
    if status >= 400 {
        check_schema("ErrorBody", &body);
    }
    if status == 401 {
        assert!(headers.contains_key("www-authenticate"));
    }
    (status, body)
}

/// Spawn the real binary over `model_dir` on a free port, with `extra` flags; returns it and its
/// base URL (read from its log).
pub fn spawn_binary(model_dir: &Path, extra: &[&str]) -> (std::process::Child, String) {
    spawn_binary_in(None, model_dir, extra)
}

/// [`spawn_binary`] with the process started in `cwd` (so that `model_dir` may be relative).
pub fn spawn_binary_in(
    cwd: Option<&Path>,
    model_dir: &Path,
    extra: &[&str],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sidrec-server"));
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .args(["--model-dir", model_dir.to_str().unwrap(), "--port", "0"])
        .args([
            "--max-batch-size",
            "1",
            "--max-batch-wait",
            "0ms",
            "--log-level",
            "info",
        ])
        .args(extra)
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"))
}
