//! Command-line errors: non-zero exits with messages that name the file (and line).

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_only_the_data_commands() {
    let o = run(&["data", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for c in ["synth", "import-minionerec", "amazon18", "stats"] {
        assert!(help.contains(c), "{help}");
    }
    assert_eq!(run(&["data", "frobnicate"]).status.code(), Some(2));
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dataset");
    let m = missing.to_str().unwrap();
    let o = run(&["data", "stats", "--data", m]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(m), "{}", stderr(&o));

    let reviews = dir.path().join("reviews.json");
    let o = run(&[
        "data",
        "amazon18",
        "--reviews",
        reviews.to_str().unwrap(),
        "--meta",
        m,
        "--out",
        m,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(m), "{}", stderr(&o));

    let o = run(&["data", "import-minionerec", "--train", m, "--out", m]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(m) || stderr(&o).contains("--valid"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn malformed_lines_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.json");
    std::fs::write(
        &meta,
        "{\"asin\": \"I1\", \"title\": \"Hex Bolts\"}\n\n{\"asin\": \"I2\", \"title\": \n",
    )
    .unwrap();
    let reviews = dir.path().join("reviews.json");
    std::fs::write(&reviews, "").unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "data",
        "amazon18",
        "--reviews",
        reviews.to_str().unwrap(),
        "--meta",
        meta.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{}:3:", meta.display())),
        "{}",
        stderr(&o)
    );

    std::fs::write(&meta, "{\"asin\": \"I1\", \"title\": \"Hex Bolts\"}\n").unwrap();
    std::fs::write(&reviews, "{\"reviewerID\": \"U1\", \"asin\": \"I1\"}\n").unwrap();
    let o = run(&[
        "data",
        "amazon18",
        "--reviews",
        reviews.to_str().unwrap(),
        "--meta",
        meta.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains(&format!(
            "{}:1: missing or non-integer `unixReviewTime`",
            reviews.display()
        )),
        "{}",
        stderr(&o)
    );

    // A malformed CSV row in a dataset.
    let data = dir.path().join("data");
    let s = run(&[
        "data",
        "synth",
        "--items",
        "100",
        "--users",
        "30",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(s.status.success());
    let test = data.join("test.csv");
    let text = std::fs::read_to_string(&test).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[2].push_str(",an extra field");
    std::fs::write(&test, lines.join("\n") + "\n").unwrap();
    let o = run(&["data", "stats", "--data", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{}:3:", test.display())),
        "{}",
        stderr(&o)
    );
}

#[test]
fn embed_names_a_missing_encoder_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("items.json"),
        r#"{"0": {"title": "Hex bolt", "description": ""}}"#,
    )
    .unwrap();
    let enc = dir.path().join("no-such-encoder");
    let out = dir.path().join("items.npy");
    let o = run(&[
        "embed",
        "--data",
        data.to_str().unwrap(),
        "--encoder",
        enc.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(enc.to_str().unwrap()), "{}", stderr(&o));
    assert!(stderr(&o).contains("fetch-encoder.sh"), "{}", stderr(&o));
    assert!(!out.exists());

    // An existing directory without the model files: the missing files are listed.
    let o = run(&[
        "embed",
        "--data",
        data.to_str().unwrap(),
        "--encoder",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("model.safetensors"), "{}", stderr(&o));
}
