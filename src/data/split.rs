//! Which split each data line goes to. Decided by the line's position among data lines (bad lines
//! included), so both passes over a file agree without storing anything per row.
use crate::data::hash::mix64;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "valid" | "validation" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            _ => bail!("unknown split {s:?}: expected train, valid or test"),
        }
    }
}

/// Rows per split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    pub train: usize,
    pub valid: usize,
    pub test: usize,
}

impl SplitCounts {
    pub fn get(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train,
            Split::Valid => self.valid,
            Split::Test => self.test,
        }
    }

    pub fn total(&self) -> usize {
        self.train + self.valid + self.test
    }

    pub(crate) fn bump(&mut self, split: Split) {
        match split {
            Split::Train => self.train += 1,
            Split::Valid => self.valid += 1,
            Split::Test => self.test += 1,
        }
    }
}

/// How data lines are divided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SplitRule {
    /// The Criteo papers' day split for a time-ordered file of 7 days: the first
    /// `floor(6n/7)` data lines train; of the remaining `r`, the first `floor(r/2)` validate and
    /// the rest test.
    Days,
    /// Each data line independently: test with probability `test_fraction`, validation with
    /// `valid_fraction`, else train; a pure function of (seed, line position).
    Random {
        valid_fraction: f64,
        test_fraction: f64,
    },
    /// Predefined split (benchmarks such as FuxiCTR and BARS ship three files): every row of the
    /// input (the training file) trains, every row of `valid` validates and every row of `test`
    /// tests, each in file order. The paths are as given; the fingerprint records them resolved.
    Files { valid: PathBuf, test: PathBuf },
}

impl SplitRule {
    /// The default 90/5/5 random split.
    pub fn random_default() -> SplitRule {
        SplitRule::Random {
            valid_fraction: 0.05,
            test_fraction: 0.05,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let SplitRule::Random {
            valid_fraction,
            test_fraction,
        } = *self
        {
            let ok = |f: f64| f.is_finite() && (0.0..1.0).contains(&f);
            if !ok(valid_fraction) || !ok(test_fraction) || valid_fraction + test_fraction >= 1.0 {
                bail!(
                    "invalid random split: valid fraction {valid_fraction} and test fraction \
                     {test_fraction} must each be in [0, 1) and sum to less than 1"
                );
            }
        }
        Ok(())
    }
}

impl fmt::Display for SplitRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitRule::Days => f.write_str("days (6/7 train, 7th day: valid then test)"),
            SplitRule::Random {
                valid_fraction,
                test_fraction,
            } => {
                // percentages to 4 decimals without trailing zeros: 80, 12.5, 0.01
                let pct = |x: f64| format!("{}", (x * 1e6).round() / 1e4);
                write!(
                    f,
                    "random ({}% train / {}% valid / {}% test)",
                    pct(1.0 - valid_fraction - test_fraction),
                    pct(*valid_fraction),
                    pct(*test_fraction)
                )
            }
            // No paths: the same files named from another directory are the same split (the
            // fingerprint compares the files themselves).
            SplitRule::Files { .. } => f.write_str("predefined (train, valid and test files)"),
        }
    }
}

/// A split rule made concrete for one file.
pub(crate) enum Assigner {
    Days {
        train_end: u64,
        valid_end: u64,
    },
    Random {
        key: u64,
        test_below: u64,
        valid_below: u64,
    },
    /// Every line of the file to one split (a file of a predefined split).
    Fixed(Split),
}

impl Assigner {
    /// The assigner of the rule's input file. `data_lines` is needed (and only used) by the day
    /// split; under `Files` the input is the training file.
    pub(crate) fn new(rule: &SplitRule, seed: u64, data_lines: u64) -> Assigner {
        match *rule {
            SplitRule::Files { .. } => Assigner::Fixed(Split::Train),
            SplitRule::Days => {
                let train_end = (u128::from(data_lines) * 6 / 7) as u64;
                let valid_end = train_end + (data_lines - train_end) / 2;
                Assigner::Days {
                    train_end,
                    valid_end,
                }
            }
            SplitRule::Random {
                valid_fraction,
                test_fraction,
            } => {
                let scale = |f: f64| (f * 2f64.powi(64)).min(u64::MAX as f64) as u64;
                let test_below = scale(test_fraction);
                Assigner::Random {
                    key: mix64(seed ^ SPLIT_SALT),
                    test_below,
                    valid_below: test_below.saturating_add(scale(valid_fraction)),
                }
            }
        }
    }

    /// Split of the data line at 0-based position `pos`.
    pub(crate) fn assign(&self, pos: u64) -> Split {
        match *self {
            Assigner::Fixed(split) => split,
            Assigner::Days {
                train_end,
                valid_end,
            } => {
                if pos < train_end {
                    Split::Train
                } else if pos < valid_end {
                    Split::Valid
                } else {
                    Split::Test
                }
            }
            Assigner::Random {
                key,
                test_below,
                valid_below,
            } => {
                let u = mix64(key ^ mix64(pos));
                if u < test_below {
                    Split::Test
                } else if u < valid_below {
                    Split::Valid
                } else {
                    Split::Train
                }
            }
        }
    }
}

/// Keeps the split stream independent of other uses of the same seed.
const SPLIT_SALT: u64 = 0x5eed_0f5b_1175_a1e5;
