//! Deterministic generator of Criteo-shaped raw data (tab-separated `label, I1..I13, C1..C26`)
//! whose labels come from a hidden model with real signal, so that models have something to learn
//! and embedding quality shows in AUC. The model is documented in `docs/data.md`.
//!
//! Every per-category parameter is a hash of (seed, field, rank, component): memory is O(1) in the
//! cardinalities. Rows are generated in fixed chunks, each from its own RNG stream seeded by
//! (seed, chunk), so the output does not depend on the number of threads.
use crate::atomic::PendingFile;
use crate::data::hash::{hash_words, mix64, unit_f64};
use anyhow::{bail, Context, Result};
use rand::distributions::Distribution;
use rand::RngCore;
use rand_distr::{StandardNormal, Zipf};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Rows of Criteo-Kaggle `train.txt`.
pub const CRITEO_ROWS: u64 = 45_840_617;

/// Distinct values of C1..C26 over the whole Criteo-Kaggle `train.txt` (DLRM's reference
/// configuration; they sum to 33.76M).
pub const CRITEO_CARDINALITIES: [u64; 26] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
    5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
];

/// Fields up to this size keep their real cardinality at any row count; larger fields scale with
/// the row count but never below this.
pub const CARDINALITY_FLOOR: u64 = 10_000;

/// Exponent of the Zipf law of value frequencies (rank r has probability ∝ r^-s).
pub const ZIPF_EXPONENT: f64 = 1.15;
/// Target share of positive labels.
pub const POSITIVE_RATE: f64 = 0.25;
/// Rank of the hidden per-category latent factors.
pub const LATENT_RANK: usize = 4;

// Standard deviations of the three parts of the hidden logit (before the intercept).
const BIAS_STD: f64 = 0.7;
const INTERACTION_STD: f64 = 1.0;
const DENSE_STD: f64 = 0.4;
/// Share of field pairs that interact.
const PAIR_DENSITY: f64 = 0.3;

/// Approximate missing rates of the real data (I1..I13, C1..C26).
const DENSE_MISSING: [f64; 13] = [
    0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.001, 0.04, 0.45, 0.04, 0.77, 0.22,
];
const CAT_MISSING: [f64; 26] = [
    0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0,
    0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44,
];
/// Dense value x = max(floor(exp(mu + sigma * N(0,1))) - 1, 0): heavy-tailed counts with many
/// zeros, medians roughly those of the real I1..I13.
const DENSE_LOGNORMAL: [(f64, f64); 13] = [
    (0.7, 1.0),
    (1.5, 1.8),
    (2.5, 1.5),
    (1.8, 1.0),
    (7.5, 1.8),
    (4.0, 1.8),
    (1.5, 1.5),
    (2.2, 1.0),
    (3.8, 1.3),
    (0.5, 0.6),
    (1.2, 1.0),
    (0.3, 1.0),
    (1.6, 1.0),
];

/// Rows generated per independent RNG stream.
pub const CHUNK_ROWS: usize = 1 << 14;
/// Rows of the pilot sample the intercept is calibrated on (its sampling error bounds how far
/// the expected positive rate can be from [`POSITIVE_RATE`]).
pub const PILOT_ROWS: usize = 1 << 15;

// Salts that separate the hash streams.
const TAG_LATENT: u64 = 1;
const TAG_BIAS: u64 = 2;
const TAG_PAIR: u64 = 3;
const TAG_FIELD: u64 = 4;
const TAG_DENSE: u64 = 5;
const TAG_HEX: u64 = 6;
const TAG_CHUNK: u64 = 7;
const TAG_PILOT: u64 = 8;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SynthConfig {
    pub rows: usize,
    pub seed: u64,
}

/// Support size of each field's value distribution for `rows` rows:
/// `clamp(round(c * rows / CRITEO_ROWS), min(c, CARDINALITY_FLOOR), c)` for real cardinality `c`.
/// Small fields (3, 4, 10, ... up to 10k) keep their real size; the big ones scale proportionally
/// (C3: 221k support at 1M rows), never above the real size. Not every value of a big field occurs:
/// the Zipf tail is mostly unsampled, as in real data.
pub fn synthetic_cardinalities(rows: usize) -> [u64; 26] {
    CRITEO_CARDINALITIES.map(|c| {
        let scaled = (c as f64 * rows as f64 / CRITEO_ROWS as f64).round() as u64;
        scaled.clamp(c.min(CARDINALITY_FLOOR), c)
    })
}

/// The hidden logit of a row, by part; `intercept + bias + interaction + dense`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LogitParts {
    pub intercept: f64,
    pub bias: f64,
    pub interaction: f64,
    pub dense: f64,
}

impl LogitParts {
    pub fn total(&self) -> f64 {
        self.intercept + self.bias + self.interaction + self.dense
    }
}

/// One generated row, before formatting.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthRow {
    pub label: u8,
    pub dense: [Option<i64>; 13],
    /// Zipf rank (1 = most frequent) of each field's value; `None` = missing.
    pub rank: [Option<u32>; 26],
    /// The 32-bit value written as 8 hex digits; a bijection of the rank per field.
    pub value: [Option<u32>; 26],
    pub logit: LogitParts,
}

impl SynthRow {
    /// Probability of a positive label under the hidden model (the Bayes-optimal prediction).
    pub fn probability(&self) -> f64 {
        sigmoid(self.logit.total())
    }
}

/// The hidden model and the value distributions for one `SynthConfig`.
pub struct Synthesizer {
    cfg: SynthConfig,
    cardinalities: [u64; 26],
    zipf: Vec<Zipf<f64>>,
    field_weight: [f64; 26],
    pairs: Vec<(usize, usize, f64)>,
    dense_weight: [f64; 13],
    hex_key: [u64; 26],
    intercept: f64,
}

impl Synthesizer {
    pub fn new(cfg: &SynthConfig) -> Result<Synthesizer> {
        let seed = cfg.seed;
        let cardinalities = synthetic_cardinalities(cfg.rows);
        let zipf = cardinalities
            .iter()
            .map(|&n| Zipf::new(n, ZIPF_EXPONENT))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("invalid Zipf distribution: {e:?}"))?;
        // Field weights of the per-category biases, in [0.3, 1], scaled to BIAS_STD overall.
        let mut field_weight =
            std::array::from_fn(|f| 0.3 + 0.7 * unit_f64(hash_words(&[seed, TAG_FIELD, f as u64])));
        normalize(&mut field_weight, BIAS_STD);
        let mut pairs = Vec::new();
        for f in 0..26u64 {
            for g in f + 1..26 {
                let h = hash_words(&[seed, TAG_PAIR, f, g]);
                if unit_f64(h) < PAIR_DENSITY {
                    pairs.push((f as usize, g as usize, approx_normal(mix64(h))));
                }
            }
        }
        let mut weights: Vec<f64> = pairs.iter().map(|p| p.2).collect();
        normalize(&mut weights, INTERACTION_STD);
        for (p, w) in pairs.iter_mut().zip(weights) {
            p.2 = w;
        }
        let mut dense_weight =
            std::array::from_fn(|j| approx_normal(hash_words(&[seed, TAG_DENSE, j as u64])));
        normalize(&mut dense_weight, DENSE_STD);
        let hex_key = std::array::from_fn(|f| hash_words(&[seed, TAG_HEX, f as u64]));
        let mut synth = Synthesizer {
            cfg: cfg.clone(),
            cardinalities,
            zipf,
            field_weight,
            pairs,
            dense_weight,
            hex_key,
            intercept: 0.0,
        };
        synth.intercept = synth.calibrate();
        Ok(synth)
    }

    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    pub fn cardinalities(&self) -> &[u64; 26] {
        &self.cardinalities
    }

    pub fn intercept(&self) -> f64 {
        self.intercept
    }

    /// Number of chunks of `CHUNK_ROWS` rows (the last may be shorter).
    pub fn num_chunks(&self) -> usize {
        self.cfg.rows.div_ceil(CHUNK_ROWS)
    }

    /// Rows `index * CHUNK_ROWS ..` of the data set.
    pub fn chunk(&self, index: usize) -> Vec<SynthRow> {
        let start = index * CHUNK_ROWS;
        let n = self.cfg.rows.saturating_sub(start).min(CHUNK_ROWS);
        let mut rng = Xoshiro::new(hash_words(&[self.cfg.seed, TAG_CHUNK, index as u64]));
        (0..n).map(|_| self.row(&mut rng, true)).collect()
    }

    /// The intercept that makes the expected positive rate POSITIVE_RATE, by bisection on the
    /// logits of a pilot sample drawn from a separate stream.
    fn calibrate(&self) -> f64 {
        let mut rng = Xoshiro::new(hash_words(&[self.cfg.seed, TAG_PILOT]));
        let logits: Vec<f64> = (0..PILOT_ROWS)
            .map(|_| self.row(&mut rng, false).logit.total())
            .collect();
        let (mut lo, mut hi) = (-30.0, 30.0);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            let rate = logits.iter().map(|&l| sigmoid(l + mid)).sum::<f64>() / logits.len() as f64;
            if rate < POSITIVE_RATE {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    fn row(&self, rng: &mut Xoshiro, with_label: bool) -> SynthRow {
        let seed = self.cfg.seed;
        let mut rank = [None; 26];
        let mut value = [None; 26];
        let mut latent = [[0.0; LATENT_RANK]; 26];
        let mut bias = 0.0;
        for f in 0..26 {
            let r = if rng.unit() < CAT_MISSING[f] {
                0
            } else {
                let r = self.zipf[f].sample(rng) as u32;
                rank[f] = Some(r);
                value[f] = Some(permute32(r, self.hex_key[f]));
                r
            };
            // A missing value is a value of its own (rank 0) with its own parameters.
            let key = [seed, TAG_BIAS, f as u64, u64::from(r)];
            bias += self.field_weight[f] * approx_normal(hash_words(&key));
            for (k, v) in latent[f].iter_mut().enumerate() {
                let key = [seed, TAG_LATENT, f as u64, u64::from(r), k as u64];
                // Component variance 1/sqrt(rank) gives dot products of unit variance.
                *v = approx_normal(hash_words(&key)) * LATENT_SCALE;
            }
        }
        let interaction: f64 = self
            .pairs
            .iter()
            .map(|&(f, g, w)| w * dot(&latent[f], &latent[g]))
            .sum();
        let mut dense = [None; 13];
        let mut dense_part = 0.0;
        for j in 0..13 {
            let (mu, sigma) = DENSE_LOGNORMAL[j];
            let z: f64 = StandardNormal.sample(rng);
            let mut x = ((mu + sigma * z).exp().floor() as i64 - 1).max(0);
            if j == 1 && rng.unit() < 0.04 {
                x = -1 - (rng.next_u32() % 3) as i64; // I2 holds the real data's few negatives
            }
            let missing = rng.unit() < DENSE_MISSING[j];
            if !missing {
                dense[j] = Some(x);
            }
            let t = (f64::from(crate::data::parse::log1p_clamped(if missing {
                0.0
            } else {
                x as f64
            })) - mu)
                / sigma;
            dense_part += self.dense_weight[j] * t;
        }
        let logit = LogitParts {
            intercept: self.intercept,
            bias,
            interaction,
            dense: dense_part,
        };
        let label = u8::from(with_label && rng.unit() < sigmoid(logit.total()));
        SynthRow {
            label,
            dense,
            rank,
            value,
            logit,
        }
    }
}

const LATENT_SCALE: f64 = 0.707_106_781_186_547_5; // sqrt(1 / sqrt(LATENT_RANK)) for rank 4

/// Writes `cfg.rows` rows in the raw Criteo format to `path`, atomically (temporary sibling, then
/// rename). The same config gives byte-identical files.
pub fn write_synthetic(path: &Path, cfg: &SynthConfig) -> Result<()> {
    if cfg.rows == 0 {
        bail!("synthetic data: expected at least 1 row, got 0");
    }
    let synth = Synthesizer::new(cfg)?;
    let pending = PendingFile::new(path)?;
    let file = File::create(&pending.tmp)
        .with_context(|| format!("cannot create {}", pending.tmp.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    let chunks = synth.num_chunks();
    let write_err = || format!("cannot write {}", pending.tmp.display());
    let mut next = 0;
    while next < chunks {
        let wave: Vec<usize> = (next..chunks.min(next + threads)).collect();
        next += wave.len();
        let texts: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = wave
                .iter()
                .map(|&c| {
                    s.spawn({
                        let synth = &synth;
                        move || format_rows(&synth.chunk(c))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for t in texts {
            out.write_all(&t).with_context(write_err)?;
        }
    }
    out.flush().with_context(write_err)?;
    out.get_ref().sync_all().with_context(write_err)?;
    drop(out);
    pending.commit()
}

fn format_rows(rows: &[SynthRow]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(rows.len() * 300);
    for row in rows {
        buf.push(b'0' + row.label);
        for x in row.dense {
            buf.push(b'\t');
            if let Some(x) = x {
                push_int(&mut buf, x);
            }
        }
        for v in row.value {
            buf.push(b'\t');
            if let Some(v) = v {
                push_hex8(&mut buf, v);
            }
        }
        buf.push(b'\n');
    }
    buf
}

fn push_int(buf: &mut Vec<u8>, x: i64) {
    if x < 0 {
        buf.push(b'-');
    }
    let mut u = x.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

fn push_hex8(buf: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        buf.push(HEX[((v >> (4 * shift)) & 0xf) as usize]);
    }
}

/// Keyed bijection on u32 (xor, odd multiplies, xorshifts): distinct ranks never share a value.
fn permute32(x: u32, key: u64) -> u32 {
    let mut x = x ^ key as u32;
    x = x.wrapping_mul(0x2c1b_3c6d);
    x ^= x >> 12;
    x = x.wrapping_mul((key >> 32) as u32 | 1);
    x ^= x >> 15;
    x = x.wrapping_mul(0x297a_2d39);
    x ^ (x >> 15)
}

/// Approximately N(0, 1) from one hash: Irwin–Hall sum of four 16-bit uniforms, standardised.
fn approx_normal(h: u64) -> f64 {
    let s: f64 = (0..4)
        .map(|i| ((h >> (16 * i)) & 0xffff) as f64)
        .sum::<f64>()
        / 65_536.0;
    (s - 2.0) * 3f64.sqrt()
}

fn normalize(w: &mut [f64], target_std: f64) {
    let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        w.iter_mut().for_each(|x| *x *= target_std / norm);
    }
}

fn dot(a: &[f64; LATENT_RANK], b: &[f64; LATENT_RANK]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// xoshiro256++: small, fast, and fully specified here, so the output does not depend on the
/// `rand` version's choice of generator.
struct Xoshiro([u64; 4]);

impl Xoshiro {
    fn new(seed: u64) -> Xoshiro {
        let mut z = seed;
        Xoshiro(std::array::from_fn(|_| {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(z)
        }))
    }

    fn unit(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }
}

impl RngCore for Xoshiro {
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
