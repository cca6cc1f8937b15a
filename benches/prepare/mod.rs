//! `mlet data prepare` throughput: a synthetic Criteo-shaped file of `--prepare-rows` rows
//! (default 10^6) as raw tab-separated Criteo and as a CSV with a header (the same rows), each
//! prepared `--prepare-runs` times (default 5, the two formats alternating) into a cache in a
//! temporary directory. Prints, per format, the median time and rows/s against the target of
//! 500k rows/s, the median CPU time (user + system, all threads: on a shared machine the wall
//! time also measures the other processes), and the peak resident memory during `prepare` (the
//! process's, which holds libtorch, and the most it rose above the resident memory before a
//! run).
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use crate::multi_embedding::median;

use mlet::data::{prepare, write_synthetic, InputFormat, PrepareOptions, SynthConfig};
use mlet::training::{peak_rss_bytes, reset_peak_rss};

pub struct Settings {
    pub rows: usize,
    pub runs: usize,
}

/// The schema that reads the CSV form of a Criteo file.
const CRITEO_CSV_SCHEMA: &str = "delimiter: \",\"\nheader: true\nlabel: label\n\
dense: [I1, I2, I3, I4, I5, I6, I7, I8, I9, I10, I11, I12, I13]\nremaining: categorical\n";

/// `tsv` as CSV: a header line, commas for tabs (synthetic values hold neither).
fn write_csv(tsv: &Path, csv: &Path) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(csv)?);
    let mut header = vec!["label".to_string()];
    header.extend((1..=13).map(|i| format!("I{i}")));
    header.extend((1..=26).map(|i| format!("C{i}")));
    writeln!(out, "{}", header.join(","))?;
    let mut reader = BufReader::new(File::open(tsv)?);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line)? > 0 {
        for b in &mut line {
            if *b == b'\t' {
                *b = b',';
            }
        }
        out.write_all(&line)?;
        line.clear();
    }
    out.flush()
}

/// The target for `prepare` on 2 cores.
const TARGET_ROWS_PER_SECOND: f64 = 500_000.0;

struct Run {
    seconds: f64,
    cpu_seconds: f64,
    peak: Option<u64>,
    before: Option<u64>,
}

/// CPU time of this process so far, all threads, in seconds.
fn cpu_seconds() -> f64 {
    crate::multi_embedding::cpu_ms() / 1e3
}

/// The 1-minute load average (other processes compete for the cores).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "n/a".into())
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.0} MiB", b as f64 / f64::from(1 << 20))
    })
}

pub fn run(s: &Settings) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tsv = dir.path().join("synth.txt");
    let csv = dir.path().join("synth.csv");
    let schema = dir.path().join("criteo-csv.yaml");
    let started = Instant::now();
    write_synthetic(
        &tsv,
        &SynthConfig {
            rows: s.rows,
            seed: 0,
        },
    )
    .expect("the synthetic file");
    write_csv(&tsv, &csv).expect("the CSV form");
    std::fs::write(&schema, CRITEO_CSV_SCHEMA).expect("the schema");
    println!(
        "\nprepare: {} synthetic Criteo rows ({:.0} MB as TSV), generated in {:.1}s; median of \
         {} runs per format, in page cache, {} threads available",
        s.rows,
        std::fs::metadata(&tsv).map_or(0.0, |m| m.len() as f64 / 1e6),
        started.elapsed().as_secs_f64(),
        s.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let formats = [
        ("criteo tsv", tsv.clone(), InputFormat::Criteo),
        ("csv + schema", csv.clone(), InputFormat::Csv { schema }),
    ];
    let mut runs: Vec<Vec<Run>> = formats.iter().map(|_| Vec::new()).collect();
    for _ in 0..s.runs.max(1) {
        for ((_, input, format), runs) in formats.iter().zip(&mut runs) {
            let out = dir.path().join("cache");
            let opts = PrepareOptions::new(input, format.clone(), &out);
            // Freed heap goes back to the system first, so that the memory above the resident
            // size before is this run's; the peak is the process's unless the kernel lets us
            // reset it.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free memory of glibc's heap.
            unsafe {
                libc::malloc_trim(0);
            }
            let before = reset_peak_rss().then(peak_rss_bytes).flatten();
            let (t, cpu) = (Instant::now(), cpu_seconds());
            let report = prepare(&opts).expect("prepare");
            let seconds = t.elapsed().as_secs_f64();
            let cpu_seconds = cpu_seconds() - cpu;
            assert_eq!(
                report.rows.total(),
                s.rows,
                "every synthetic row is prepared"
            );
            runs.push(Run {
                seconds,
                cpu_seconds,
                peak: peak_rss_bytes(),
                before,
            });
            std::fs::remove_dir_all(&out).expect("removing the cache");
        }
    }
    println!("load average after the runs: {}", load_average());
    println!(
        "{:<14} {:>9} {:>10} {:>16} {:>11} {:>10} {:>10} {:>13}",
        "input",
        "median s",
        "rows/s",
        "vs 500k target",
        "range s",
        "CPU s",
        "peak RSS",
        "above before"
    );
    for ((name, _, _), runs) in formats.iter().zip(&runs) {
        let seconds = median(runs.iter().map(|r| r.seconds).collect());
        let (lo, hi) = runs.iter().fold((f64::MAX, 0f64), |(lo, hi), r| {
            (lo.min(r.seconds), hi.max(r.seconds))
        });
        let peak = runs.iter().filter_map(|r| r.peak).max();
        let above = runs
            .iter()
            .filter_map(|r| Some(r.peak?.saturating_sub(r.before?)))
            .max();
        let rate = s.rows as f64 / seconds;
        let verdict = if rate >= TARGET_ROWS_PER_SECOND {
            "met".to_string()
        } else {
            format!(
                "{:.0}% short",
                100.0 * (1.0 - rate / TARGET_ROWS_PER_SECOND)
            )
        };
        println!(
            "{name:<14} {seconds:>9.2} {rate:>10.0} {verdict:>16} {:>11} {:>10.2} {:>10} {:>13}",
            format!("{lo:.2}-{hi:.2}"),
            median(runs.iter().map(|r| r.cpu_seconds).collect()),
            mib(peak),
            mib(above),
        );
    }
}
