//! Settings of paper 004's models (the multi-embedding paper), one struct per model, each with
//! the authors' settings as its `Default` and its own validation. Absent keys take the default.
//!
//! All of them end in the same over arch: a hidden stack (Linear → BatchNorm → ReLU → Dropout
//! per width, pytorch-fm's `MultiLayerPerceptron`) and one output unit. With `embedding.sets`
//! above 1, each set runs through its own interaction and its own first hidden layer (the
//! non-linear projection that keeps multi-embedding from collapsing into one wide embedding),
//! the sets' outputs are averaged, and the rest of the stack is shared.
use serde::{Deserialize, Serialize};

/// Paper 004's MLP: 400-400 (plus the output unit).
fn mlp_400_400() -> Vec<usize> {
    vec![400, 400]
}
fn dropout_02() -> f64 {
    0.2
}
fn yes() -> bool {
    true
}
fn four() -> usize {
    4
}
fn one() -> usize {
    1
}
fn fs_800() -> Vec<usize> {
    vec![800]
}

/// The over arch shared by DNN, IPNN, NFwFM and DCNv2 (`model.mlp`): hidden widths, dropout
/// after each, batch norm.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MlpSettings {
    /// Hidden widths; the first is the per-set projection under multi-embedding.
    #[serde(default = "mlp_400_400")]
    pub hidden_units: Vec<usize>,
    #[serde(default = "dropout_02")]
    pub dropout: f64,
    /// BatchNorm1d after each hidden linear layer (the authors' pytorch-fm MLP has it).
    #[serde(default = "yes")]
    pub batch_norm: bool,
}

impl Default for MlpSettings {
    fn default() -> Self {
        MlpSettings {
            hidden_units: mlp_400_400(),
            dropout: dropout_02(),
            batch_norm: true,
        }
    }
}

impl MlpSettings {
    fn validate(&self) -> Result<(), String> {
        validate_widths("model.mlp.hidden_units", &self.hidden_units)?;
        validate_dropout("model.mlp.dropout", self.dropout)
    }
}

fn validate_widths(key: &str, widths: &[usize]) -> Result<(), String> {
    if widths.is_empty() {
        return Err(format!(
            "{key}: at least one hidden layer (its first layer is each embedding set's \
             non-linear projection)"
        ));
    }
    if widths.contains(&0) {
        return Err(format!("{key}: layer widths must be at least 1"));
    }
    Ok(())
}

fn validate_dropout(key: &str, p: f64) -> Result<(), String> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{key}: a dropout rate in [0, 1) (got {p})"))
    }
}

/// DNN: the MLP over the flattened embeddings (and dense features).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnnConfig {
    #[serde(default)]
    pub mlp: MlpSettings,
}

/// IPNN (Qu et al. 2016): the MLP over [pairwise inner products, flattened embeddings, dense].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpnnConfig {
    #[serde(default)]
    pub mlp: MlpSettings,
}

/// NFwFM: NFM with FwFM's field-weighted pooling `Σ_ij r_ij e_i ⊙ e_j`, then batch norm and
/// dropout, then the MLP. Paper 004 runs it at a base embedding size of 50.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NfwfmConfig {
    #[serde(default)]
    pub mlp: MlpSettings,
    /// Dropout after the pooling (the authors' `dropouts[0]`).
    #[serde(default = "dropout_02")]
    pub pooling_dropout: f64,
}

impl Default for NfwfmConfig {
    fn default() -> Self {
        NfwfmConfig {
            mlp: MlpSettings::default(),
            pooling_dropout: dropout_02(),
        }
    }
}

/// DCNv2 (Wang et al. 2021), stacked: full-rank cross layers `x0 ⊙ (W x + b) + x` on
/// [flattened embeddings, dense], then the MLP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dcnv2Config {
    #[serde(default = "four")]
    pub cross_layers: usize,
    #[serde(default)]
    pub mlp: MlpSettings,
}

impl Default for Dcnv2Config {
    fn default() -> Self {
        Dcnv2Config {
            cross_layers: four(),
            mlp: MlpSettings::default(),
        }
    }
}

/// FinalMLP (Mao et al. 2023): two MLP streams over [flattened embeddings, dense], each behind
/// its own feature-selection gate, joined by multi-head bilinear fusion into the logit. Under
/// multi-embedding each set has its own two streams and the streams are averaged over sets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FinalMlpConfig {
    #[serde(default = "mlp_400_400")]
    pub stream1_hidden_units: Vec<usize>,
    #[serde(default = "mlp_400_400")]
    pub stream2_hidden_units: Vec<usize>,
    #[serde(default = "dropout_02")]
    pub dropout: f64,
    #[serde(default = "yes")]
    pub batch_norm: bool,
    /// The gates `2·sigmoid(MLP(context))` in front of each stream (the authors' paper-004 code
    /// leaves them out: `false` reproduces it).
    #[serde(default = "yes")]
    pub feature_selection: bool,
    /// Hidden widths of each gate's MLP.
    #[serde(default = "fs_800")]
    pub fs_hidden_units: Vec<usize>,
    /// Heads of the bilinear fusion; each stream's last width must divide by it.
    #[serde(default = "one")]
    pub fusion_heads: usize,
}

impl Default for FinalMlpConfig {
    fn default() -> Self {
        FinalMlpConfig {
            stream1_hidden_units: mlp_400_400(),
            stream2_hidden_units: mlp_400_400(),
            dropout: dropout_02(),
            batch_norm: true,
            feature_selection: true,
            fs_hidden_units: fs_800(),
            fusion_heads: one(),
        }
    }
}

impl DnnConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.mlp.validate()
    }
}

impl IpnnConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.mlp.validate()
    }
}

impl NfwfmConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.mlp.validate()?;
        validate_dropout("model.pooling_dropout", self.pooling_dropout)
    }
}

impl Dcnv2Config {
    pub fn validate(&self) -> Result<(), String> {
        self.mlp.validate()
    }
}

impl FinalMlpConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_widths("model.stream1_hidden_units", &self.stream1_hidden_units)?;
        validate_widths("model.stream2_hidden_units", &self.stream2_hidden_units)?;
        validate_dropout("model.dropout", self.dropout)?;
        if self.fs_hidden_units.contains(&0) {
            return Err("model.fs_hidden_units: layer widths must be at least 1".into());
        }
        if self.fusion_heads == 0 {
            return Err("model.fusion_heads: must be at least 1".into());
        }
        let (a, b) = (
            *self.stream1_hidden_units.last().unwrap(),
            *self.stream2_hidden_units.last().unwrap(),
        );
        if a % self.fusion_heads != 0 || b % self.fusion_heads != 0 {
            return Err(format!(
                "model.fusion_heads: {} heads must divide both streams' last widths ({a} and {b})",
                self.fusion_heads
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_paper_004s_and_absent_keys_take_them() {
        let d: Dcnv2Config = serde_yaml::from_str("{}").unwrap();
        assert_eq!(d, Dcnv2Config::default());
        assert_eq!(d.cross_layers, 4);
        assert_eq!(d.mlp.hidden_units, [400, 400]);
        assert_eq!(d.mlp.dropout, 0.2);
        let n: NfwfmConfig = serde_yaml::from_str("mlp: {hidden_units: [8]}").unwrap();
        assert_eq!(n.mlp.hidden_units, [8]);
        assert_eq!(n.pooling_dropout, 0.2);
        let f: FinalMlpConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(f.fs_hidden_units, [800]);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let err = serde_yaml::from_str::<DnnConfig>("mlp: {hidden_unit: [4]}").unwrap_err();
        assert!(err.to_string().contains("hidden_unit"), "{err}");
        let d: DnnConfig = serde_yaml::from_str("mlp: {hidden_units: []}").unwrap();
        assert!(d.validate().unwrap_err().contains("model.mlp.hidden_units"));
        let d: Dcnv2Config = serde_yaml::from_str("mlp: {dropout: 1.0}").unwrap();
        assert!(d.validate().unwrap_err().contains("model.mlp.dropout"));
        let f: FinalMlpConfig =
            serde_yaml::from_str("stream1_hidden_units: [6]\nfusion_heads: 4").unwrap();
        assert!(f.validate().unwrap_err().contains("model.fusion_heads"));
    }
}
