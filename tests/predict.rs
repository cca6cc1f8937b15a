//! Serving from raw rows: `mlet predict` on a run directory and on an export, and the README's
//! Python snippet, predict for raw rows what the trained model predicts for the same rows read
//! from the cache; unseen values are out of vocabulary; bad input fails clearly.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tch::{CModule, Device, Kind, Tensor};

use mlet::data::{
    prepare, write_synthetic, Dataset, InputFormat, PrepareOptions, Split, SplitRule, SynthConfig,
    VocabFile, VOCAB_FILE,
};
use mlet::export::load_run;
use mlet::training::predict;

fn mlet(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlet"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or(b"")).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = mlet(args, stdin);
    assert!(
        out.status.success(),
        "mlet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The error of a command that must fail (non-zero exit, no panic).
fn fails(args: &[&str]) -> String {
    let out = mlet(args, None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "mlet {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn probabilities(text: &str) -> Vec<f32> {
    text.lines().map(|l| l.parse().unwrap()).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Trains `runs` (YAML list items) on the cache at `cache`; returns the run directories.
fn train(dir: &Path, cache: &Path, runs: &str) -> Vec<PathBuf> {
    let text = format!(
        "
name: serve
data: {{cache: {cache}}}
model: {{kind: dlrm, bottom_mlp: [16], top_mlp: [16]}}
embedding: {{dim: 8}}
training: {{batch_size: 32, epochs: 3, seed: 2}}
output: {out}
runs:
{runs}",
        cache = cache.display(),
        out = dir.join("runs").display()
    );
    common::train_experiment(&text)
}

/// The trained model's click probabilities for every cached row, in raw-file order (the caches
/// here use the day split: train, valid and test are consecutive lines).
fn cached_predictions(run: &Path, cache: &Path) -> Vec<f32> {
    let loaded = load_run(run, Device::Cpu).unwrap();
    let data = Dataset::open(cache).unwrap();
    let mut out = Vec::new();
    for split in [Split::Train, Split::Valid, Split::Test] {
        let logits = predict(&loaded.model, &data.split(split), 512, None, Device::Cpu).unwrap();
        out.extend(logits.iter().map(|z| 1.0 / (1.0 + (-z).exp())));
    }
    out
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let diff = common::max_abs_diff(got, want);
    eprintln!("{what}: {} rows, max |Δp| = {diff:e}", got.len());
    assert!(diff <= tol, "{what}: max |Δp| = {diff}");
}

/// The README's `serve.py` block, run on an export and a rows file.
fn python_snippet(dir: &Path, model: &Path, rows: &Path) -> Vec<f32> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme
        .find("### Serving from raw rows")
        .expect("README section")..];
    let start = section.find("```python\n").expect("python block") + "```python\n".len();
    let code = &section[start..start + section[start..].find("```").unwrap()];
    let script = dir.join("serve.py");
    std::fs::write(&script, code).unwrap();
    let vocab = model.with_extension("vocab.json");
    let out = Command::new(common::python())
        .arg(&script)
        .args([model, &vocab, rows])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "serve.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    probabilities(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn criteo_rows_predict_what_the_model_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let raw = dir.join("raw.tsv");
    write_synthetic(
        &raw,
        &SynthConfig {
            rows: 3000,
            seed: 5,
        },
    )
    .unwrap();
    let cache = dir.join("cache");
    prepare(&PrepareOptions::new(&raw, InputFormat::Criteo, &cache)).unwrap();
    let runs = train(
        dir,
        &cache,
        "  - name: mlet\n    embedding: {kind: mlet, k: 16}\n  - name: single\n",
    );
    let text = std::fs::read(&raw).unwrap();
    let no_label: Vec<u8> = text
        .split_inclusive(|&b| b == b'\n')
        .flat_map(|l| &l[l.iter().position(|&b| b == b'\t').unwrap() + 1..])
        .copied()
        .collect();
    let no_label_path = dir.join("no-label.tsv");
    std::fs::write(&no_label_path, &no_label).unwrap();

    for run in &runs {
        let name = run.file_name().unwrap().to_string_lossy().into_owned();
        let want = cached_predictions(run, &cache);
        let spread =
            want.iter().cloned().fold(0f32, f32::max) - want.iter().cloned().fold(1f32, f32::min);
        assert!(spread > 0.05, "{name}: predictions barely vary ({spread})");
        // batches of a run directory are bounded as its evaluation's are
        let predictor = mlet::serve::Predictor::open(run, Device::Cpu).unwrap();
        let loaded = load_run(run, Device::Cpu).unwrap();
        let bound = mlet::training::eval_batch_size(&loaded.config.eval, &loaded.model);
        assert_eq!(predictor.batch_rows(usize::MAX), bound);
        assert_eq!(predictor.batch_rows(100), 100.min(bound));

        // (a) the run directory, rows with and without the label (the latter on stdin)
        let got = probabilities(&ok(&["predict", path(run), "--input", path(&raw)], None));
        assert_close(&format!("{name} run dir"), &got, &want, 1e-6);
        let got = probabilities(&ok(
            &["predict", path(run), "--input", "-", "--batch-size", "100"],
            Some(&no_label),
        ));
        assert_close(
            &format!("{name} run dir, no label, stdin"),
            &got,
            &want,
            1e-6,
        );

        // (b) the export, collapsed: written next to the model, read back
        let model = dir.join(format!("{name}.pt"));
        let printed = ok(&["export", path(run), "--out", path(&model)], None);
        let vocab_path = dir.join(format!("{name}.vocab.json"));
        assert!(printed.contains(path(&vocab_path)), "{printed}");
        let vocab = VocabFile::read(&vocab_path).unwrap();
        assert_eq!(vocab, VocabFile::read(&cache.join(VOCAB_FILE)).unwrap());
        let out = dir.join(format!("{name}.p"));
        let printed = ok(
            &[
                "predict",
                path(&model),
                "--input",
                path(&no_label_path),
                "--out",
                path(&out),
            ],
            None,
        );
        assert!(printed.contains("wrote 3000 probabilities"), "{printed}");
        let exported = probabilities(&std::fs::read_to_string(&out).unwrap());
        assert_close(&format!("{name} export, no label"), &exported, &want, 1e-6);
        let got = probabilities(&ok(
            &[
                "predict",
                path(&model),
                "--input",
                path(&raw),
                "--format",
                "criteo",
                "-q",
            ],
            None,
        ));
        assert_close(&format!("{name} export"), &got, &exported, 0.0);
        // a reader that stops early (`| head -1`) ends predict quietly, not with an error
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlet"))
            .args([
                "predict",
                path(&model),
                "--input",
                path(&raw),
                "--batch-size",
                "100",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 4];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let quiet_end = out.status.success()
            || std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(libc::SIGPIPE);
        assert!(quiet_end && err.is_empty(), "{:?}: {err}", out.status);

        // (c) the README's Python snippet on the export equals mlet predict
        let py = python_snippet(dir, &model, &raw);
        assert_close(&format!("{name} python"), &py, &exported, 1e-6);
        let py = python_snippet(dir, &model, &no_label_path);
        assert_close(&format!("{name} python, no label"), &py, &exported, 1e-6);
    }

    // (d) values never seen in training read the OOV row 0 of every field
    let unseen: String = String::from_utf8(text.clone())
        .unwrap()
        .lines()
        .take(50)
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            format!(
                "{}\t{}\n",
                cols[..14].join("\t"),
                vec!["zzzzzzzzz"; 26].join("\t")
            )
        })
        .collect();
    let unseen_path = dir.join("unseen.tsv");
    std::fs::write(&unseen_path, &unseen).unwrap();
    let model = dir.join("mlet.pt");
    let got = probabilities(&ok(
        &["predict", path(&model), "--input", path(&unseen_path)],
        None,
    ));
    let data = Dataset::open(&cache).unwrap();
    let train = data.split(Split::Train);
    let dense = Tensor::from_slice(&train.dense[..50 * train.num_dense]).view([50, -1]);
    let module = CModule::load(&model).unwrap();
    let oov = module
        .forward_ts(&[dense, Tensor::zeros([50, 26], (Kind::Int64, Device::Cpu))])
        .unwrap();
    let oov = Vec::<f32>::try_from(&oov.to_kind(Kind::Float)).unwrap();
    assert_close("unseen values", &got, &oov, 1e-6);
    let seen = &cached_predictions(&runs[0], &cache)[..50];
    assert!(
        common::max_abs_diff(&got, seen) > 1e-3,
        "OOV rows predict as the real ones"
    );

    // (e) bad input: clear errors, non-zero exit
    let bad = |line: &str| -> String {
        let p = dir.join("bad.tsv");
        let first =
            String::from_utf8(text[..text.iter().position(|&b| b == b'\n').unwrap() + 1].to_vec())
                .unwrap();
        std::fs::write(&p, format!("{first}{first}{line}\n")).unwrap();
        fails(&["predict", path(&model), "--input", path(&p)])
    };
    let mut cols: Vec<String> = String::from_utf8(text.clone())
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .map(String::from)
        .collect();
    cols[1] = "12x".into();
    let err = bad(&cols.join("\t"));
    assert!(
        err.contains("line 3, column 2 (I1): expected an integer"),
        "{err}"
    );
    let err = bad(&cols[..30].join("\t"));
    assert!(
        err.contains("line 3") && err.contains("expected 40 tab-separated columns"),
        "{err}"
    );
    let err = fails(&[
        "predict",
        path(&model),
        "--input",
        path(&unseen_path),
        "--format",
        "avazu",
    ]);
    assert!(
        err.contains("--format avazu: the model was trained on criteo rows"),
        "{err}"
    );
    let err = fails(&[
        "predict",
        path(&model),
        "--input",
        path(&dir.join("nope.tsv")),
    ]);
    assert!(err.contains("nope.tsv"), "{err}");
    // an export without its vocabulary, a cache from before vocabularies
    std::fs::rename(dir.join("mlet.vocab.json"), dir.join("moved.json")).unwrap();
    let err = fails(&["predict", path(&model), "--input", path(&raw)]);
    assert!(
        err.contains("mlet.vocab.json: missing") && err.contains("re-export"),
        "{err}"
    );
    std::fs::remove_file(cache.join(VOCAB_FILE)).unwrap();
    let err = fails(&["predict", path(&runs[0]), "--input", path(&raw)]);
    assert!(
        err.contains("predates vocabularies") && err.contains("mlet data prepare"),
        "{err}"
    );
    let err = fails(&[
        "export",
        path(&runs[0]),
        "--out",
        path(&dir.join("again.pt")),
    ]);
    assert!(err.contains("predates vocabularies"), "{err}");
    assert!(!dir.join("again.pt").exists());
}

/// A CSV file with a header, quoting, a non-UTF-8 value, a derived categorical field (day of
/// week of a timestamp) and two dense transforms.
#[test]
fn csv_rows_with_a_schema_predict_what_the_model_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut raw = b"id,click,hour,site,app,price\n".to_vec();
    let sites: [&[u8]; 6] = [b"s1", b"\"a,b\"", b"caf\xc3\xa9", b"x\xffy", b"", b"s5"];
    let mut state = 12345u64;
    for i in 0..3000u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = state >> 33;
        let site = sites[(r % 6) as usize];
        let app = format!("app{}", (r >> 3) % 40);
        let day = 21 + (r >> 9) % 7;
        let hour = (r >> 12) % 24;
        let click =
            u64::from((r >> 17).is_multiple_of(4) || (r % 6 == 1 && (r >> 20).is_multiple_of(2)));
        raw.extend_from_slice(format!("{i},{click},1410{day:02}{hour:02},").as_bytes());
        raw.extend_from_slice(site);
        raw.extend_from_slice(format!(",{app},{}.5\n", (r >> 24) % 100).as_bytes());
    }
    let raw_path = dir.join("raw.csv");
    std::fs::write(&raw_path, &raw).unwrap();
    let schema = dir.join("schema.yaml");
    std::fs::write(
        &schema,
        "label: click\ndense: [{column: hour, transform: hour_of_day}, price]\n\
         categorical: [site, app, {column: hour, transform: day_of_week}]\n",
    )
    .unwrap();
    let cache = dir.join("cache");
    let mut opts = PrepareOptions::new(
        &raw_path,
        InputFormat::Csv {
            schema: schema.clone(),
        },
        &cache,
    );
    opts.split = SplitRule::Days;
    prepare(&opts).unwrap();
    // the vocabulary file: plain JSON, the derived field's tokens, the non-UTF-8 value in hex
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cache.join(VOCAB_FILE)).unwrap()).unwrap();
    let fields = json["fields"].as_array().unwrap();
    assert_eq!(fields[2]["name"], "hour_weekday");
    assert_eq!(fields[2]["derive"], "day_of_week");
    assert_eq!(fields[2]["values"].as_array().unwrap().len(), 8);
    let site_values = fields[0]["values"].as_array().unwrap();
    assert!(site_values.contains(&serde_json::json!({"hex": "78ff79"})));
    assert!(site_values.contains(&serde_json::json!("a,b")));
    assert!(site_values.contains(&serde_json::json!("café")));
    assert_eq!(json["dense"][0]["transform"], "hour_of_day");

    let runs = train(dir, &cache, "  - name: single\n");
    let want = cached_predictions(&runs[0], &cache);
    let got = probabilities(&ok(
        &["predict", path(&runs[0]), "--input", path(&raw_path)],
        None,
    ));
    assert_close("csv run dir", &got, &want, 1e-6);
    // without the label column (dropped from the header and every row) and in another order
    let no_label: Vec<u8> = raw
        .split_inclusive(|&b| b == b'\n')
        .flat_map(|l| {
            // id,click,hour,... -> hour,id,... (click is the second column, never quoted)
            let c1 = l.iter().position(|&b| b == b',').unwrap();
            let c2 = c1 + 1 + l[c1 + 1..].iter().position(|&b| b == b',').unwrap();
            let c3 = c2 + 1 + l[c2 + 1..].iter().position(|&b| b == b',').unwrap();
            [&l[c2 + 1..c3], b",", &l[..c1], &l[c3..]].concat()
        })
        .collect();
    let no_label_path = dir.join("no-label.csv");
    std::fs::write(&no_label_path, &no_label).unwrap();
    let got = probabilities(&ok(
        &[
            "predict",
            path(&runs[0]),
            "--input",
            path(&no_label_path),
            "--schema",
            path(&schema),
        ],
        None,
    ));
    assert_close("csv run dir, no label, reordered", &got, &want, 1e-6);

    let model = dir.join("m.pt");
    ok(&["export", path(&runs[0]), "--out", path(&model)], None);
    let exported = probabilities(&ok(
        &["predict", path(&model), "--input", path(&raw_path)],
        None,
    ));
    assert_close("csv export", &exported, &want, 1e-6);
    let py = python_snippet(dir, &model, &no_label_path);
    assert_close("csv python, no label", &py, &exported, 1e-6);

    // a different schema is refused, a missing needed column named
    let other = dir.join("other.yaml");
    std::fs::write(&other, "label: click\ncategorical: [site]\n").unwrap();
    let err = fails(&[
        "predict",
        path(&model),
        "--input",
        path(&raw_path),
        "--schema",
        path(&other),
    ]);
    assert!(err.contains("differs from the schema"), "{err}");
    let no_app = dir.join("no-app.csv");
    std::fs::write(&no_app, "id,click,hour,site,price\n1,0,14102100,s1,3\n").unwrap();
    let err = fails(&["predict", path(&model), "--input", path(&no_app)]);
    assert!(err.contains("expected a column named \"app\""), "{err}");
}
