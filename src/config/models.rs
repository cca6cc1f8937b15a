//! Settings of the models, one struct per model (`model.kind`), each with its own validation and
//! its reference's settings as its `Default`; absent keys take the default.
//!
//! DLRM's defaults are the MLET paper's Criteo MLPs; WDL, DeepFM, xDeepFM, DCN, AutoInt and NFM
//! take DeepCTR-Torch 0.3.0's constructor defaults (and its L2 coefficients, see [`L2Config`]).
//!
//! Paper 004's models (the multi-embedding paper: DNN, IPNN, NFwFM, DCNv2, FinalMLP) take the
//! authors' settings. All of them end in the same over arch: a hidden stack (Linear → BatchNorm → ReLU → Dropout
//! per width, pytorch-fm's `MultiLayerPerceptron`) and one output unit. With `embedding.sets`
//! above 1, each set runs through its own interaction and its own first hidden layer (the
//! non-linear projection that keeps multi-embedding from collapsing into one wide embedding),
//! the sets' outputs are averaged, and the rest of the stack is shared.
use serde::{Deserialize, Deserializer, Serialize};

/// DLRM (Naumov et al. 2019): bottom MLP on dense features to width d, pairwise dot products of
/// all d-vectors, top MLP to one logit. Defaults: the MLET paper's Criteo MLPs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DlrmConfig {
    /// Hidden widths of the bottom MLP; a last layer of width d is appended.
    pub bottom_mlp: Vec<usize>,
    /// Hidden widths of the top MLP; a last layer of width 1 is appended.
    pub top_mlp: Vec<usize>,
}

impl Default for DlrmConfig {
    fn default() -> Self {
        DlrmConfig {
            bottom_mlp: vec![512, 256, 128],
            top_mlp: vec![512, 256],
        }
    }
}

/// Wide & Deep (DeepCTR-Torch `WDL`): linear part + DNN over [embeddings, dense].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WdlConfig {
    pub dnn_hidden_units: Vec<usize>,
    pub dnn_dropout: f64,
    pub l2: L2Config,
}

impl Default for WdlConfig {
    fn default() -> Self {
        WdlConfig {
            dnn_hidden_units: vec![256, 128],
            dnn_dropout: 0.0,
            l2: L2Config::default(),
        }
    }
}

/// DeepFM: linear part + FM second-order term + DNN.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeepfmConfig {
    pub use_fm: bool,
    pub dnn_hidden_units: Vec<usize>,
    pub dnn_dropout: f64,
    pub l2: L2Config,
}

impl Default for DeepfmConfig {
    fn default() -> Self {
        DeepfmConfig {
            use_fm: true,
            dnn_hidden_units: vec![256, 128],
            dnn_dropout: 0.0,
            l2: L2Config::default(),
        }
    }
}

/// xDeepFM: linear part + compressed interaction network (CIN) + DNN.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct XdeepfmConfig {
    pub dnn_hidden_units: Vec<usize>,
    pub cin_layer_size: Vec<usize>,
    pub cin_split_half: bool,
    pub dnn_dropout: f64,
    /// `interaction`: the CIN's weights (DeepCTR's `l2_reg_cin`, 0 when absent).
    pub l2: L2Config,
}

impl Default for XdeepfmConfig {
    fn default() -> Self {
        XdeepfmConfig {
            dnn_hidden_units: vec![256, 256],
            cin_layer_size: vec![256, 128],
            cin_split_half: true,
            dnn_dropout: 0.0,
            l2: L2Config::default(),
        }
    }
}

/// The cross layers' weight of DCN: a vector per layer (`x0 · (x_l · w) + b + x_l`, the DCN
/// paper's) or a matrix (`x0 ⊙ (W x_l) + b + x_l`, DCN-M).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CrossParameterization {
    #[default]
    Vector,
    Matrix,
}

/// Read from a string so that a wrong value names the choices as the other settings' errors do.
impl<'de> Deserialize<'de> for CrossParameterization {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "vector" => Ok(CrossParameterization::Vector),
            "matrix" => Ok(CrossParameterization::Matrix),
            other => Err(serde::de::Error::custom(format!(
                "cross_parameterization: `vector` or `matrix` (got `{other}`)"
            ))),
        }
    }
}

/// Deep & Cross Network: linear part + cross network + DNN.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DcnConfig {
    pub cross_num: usize,
    /// `vector` or `matrix`.
    pub cross_parameterization: CrossParameterization,
    pub dnn_hidden_units: Vec<usize>,
    pub dnn_dropout: f64,
    /// `interaction`: the cross kernels (DeepCTR's `l2_reg_cross`, 1e-5 when absent); `linear`
    /// also penalises `dnn_linear`, as DeepCTR-Torch does.
    pub l2: L2Config,
}

impl Default for DcnConfig {
    fn default() -> Self {
        DcnConfig {
            cross_num: 2,
            cross_parameterization: CrossParameterization::Vector,
            dnn_hidden_units: vec![128, 128],
            dnn_dropout: 0.0,
            l2: L2Config::default(),
        }
    }
}

/// AutoInt: multi-head self-attention over the field embeddings + DNN.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AutointConfig {
    pub att_layer_num: usize,
    /// Must divide the embedding dimension (checked when the model is built).
    pub att_head_num: usize,
    pub att_res: bool,
    pub dnn_hidden_units: Vec<usize>,
    pub dnn_dropout: f64,
    pub l2: L2Config,
}

impl Default for AutointConfig {
    fn default() -> Self {
        AutointConfig {
            att_layer_num: 3,
            att_head_num: 2,
            att_res: true,
            dnn_hidden_units: vec![256, 128],
            dnn_dropout: 0.0,
            l2: L2Config::default(),
        }
    }
}

/// NFM: linear part + bi-interaction pooling + DNN.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NfmConfig {
    pub dnn_hidden_units: Vec<usize>,
    pub bi_dropout: f64,
    pub dnn_dropout: f64,
    pub l2: L2Config,
}

impl Default for NfmConfig {
    fn default() -> Self {
        NfmConfig {
            dnn_hidden_units: vec![128, 128],
            bi_dropout: 0.0,
            dnn_dropout: 0.0,
            l2: L2Config::default(),
        }
    }
}

/// L2 penalties added to the loss, DeepCTR-Torch style (`l2 · Σ w²`). Embedding and linear
/// penalties apply to the rows a batch looks up (and MLET's projections), not to whole tables,
/// so that updates stay sparse: a departure from DeepCTR-Torch, which penalises every row.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct L2Config {
    pub embedding: f64,
    pub linear: f64,
    pub dnn: f64,
    /// Cross network (DCN, default 1e-5) or CIN (xDeepFM, default 0) weights.
    pub interaction: Option<f64>,
}

/// DeepCTR-Torch's `l2_reg_embedding`, `l2_reg_linear` and `l2_reg_dnn`.
impl Default for L2Config {
    fn default() -> Self {
        L2Config {
            embedding: 1e-5,
            linear: 1e-5,
            dnn: 0.0,
            interaction: None,
        }
    }
}

impl L2Config {
    /// No penalty at all (DLRM and paper 004's models).
    pub const NONE: L2Config = L2Config {
        embedding: 0.0,
        linear: 0.0,
        dnn: 0.0,
        interaction: None,
    };

    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("embedding", self.embedding),
            ("linear", self.linear),
            ("dnn", self.dnn),
            ("interaction", self.interaction.unwrap_or(0.0)),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("model.l2.{key}: a non-negative number (got {v})"));
            }
        }
        Ok(())
    }
}

/// Widths of a DeepCTR-style DNN or CIN: may be empty (that part is left out).
fn validate_deepctr_widths(key: &str, widths: &[usize]) -> Result<(), String> {
    if widths.contains(&0) {
        Err(format!("{key}: layer widths must be at least 1"))
    } else {
        Ok(())
    }
}

/// `dnn_hidden_units`, `dnn_dropout` and `l2` of the DeepCTR-style models.
fn validate_dnn(hidden: &[usize], dropout: f64) -> Result<(), String> {
    validate_deepctr_widths("model.dnn_hidden_units", hidden)?;
    validate_dropout("model.dnn_dropout", dropout)
}

impl DlrmConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_deepctr_widths("model.bottom_mlp", &self.bottom_mlp)?;
        validate_deepctr_widths("model.top_mlp", &self.top_mlp)
    }
}

impl WdlConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_dnn(&self.dnn_hidden_units, self.dnn_dropout)?;
        self.l2.validate()
    }
}

impl DeepfmConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_dnn(&self.dnn_hidden_units, self.dnn_dropout)?;
        self.l2.validate()
    }
}

impl XdeepfmConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_deepctr_widths("model.dnn_hidden_units", &self.dnn_hidden_units)?;
        validate_deepctr_widths("model.cin_layer_size", &self.cin_layer_size)?;
        validate_dropout("model.dnn_dropout", self.dnn_dropout)?;
        let last = self.cin_layer_size.len().saturating_sub(1);
        if self.cin_split_half && self.cin_layer_size[..last].iter().any(|s| s % 2 == 1) {
            return Err(
                "model.cin_layer_size: with cin_split_half every size but the last must be even"
                    .into(),
            );
        }
        self.l2.validate()
    }
}

impl DcnConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_dnn(&self.dnn_hidden_units, self.dnn_dropout)?;
        self.l2.validate()
    }
}

impl AutointConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_dnn(&self.dnn_hidden_units, self.dnn_dropout)?;
        self.l2.validate()
    }
}

impl NfmConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_deepctr_widths("model.dnn_hidden_units", &self.dnn_hidden_units)?;
        validate_dropout("model.bi_dropout", self.bi_dropout)?;
        validate_dropout("model.dnn_dropout", self.dnn_dropout)?;
        self.l2.validate()
    }
}

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
    fn deepctr_defaults_are_deepctr_torchs_and_absent_keys_take_them() {
        let x: XdeepfmConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(x, XdeepfmConfig::default());
        assert_eq!(
            (x.dnn_hidden_units, x.cin_layer_size, x.cin_split_half),
            (vec![256, 256], vec![256, 128], true)
        );
        let d: DcnConfig = serde_yaml::from_str("cross_parameterization: matrix").unwrap();
        assert_eq!(d.cross_parameterization, CrossParameterization::Matrix);
        assert_eq!((d.cross_num, d.dnn_hidden_units), (2, vec![128, 128]));
        assert_eq!(d.l2, L2Config::default());
        let a: AutointConfig = serde_yaml::from_str("l2: {dnn: 0.5}").unwrap();
        assert_eq!((a.att_layer_num, a.att_head_num, a.l2.dnn), (3, 2, 0.5));
        assert_eq!(a.l2.embedding, 1e-5);
        assert_eq!(DlrmConfig::default().bottom_mlp, [512, 256, 128]);
        assert_eq!(NfmConfig::default().dnn_hidden_units, [128, 128]);
        assert!(DeepfmConfig::default().use_fm);
        assert_eq!(WdlConfig::default().dnn_hidden_units, [256, 128]);
        // the written form is the one read
        let text = serde_yaml::to_string(&DcnConfig::default()).unwrap();
        assert!(text.contains("cross_parameterization: vector"), "{text}");
        assert_eq!(
            serde_yaml::from_str::<DcnConfig>(&text).unwrap(),
            DcnConfig::default()
        );
    }

    #[test]
    fn bad_deepctr_settings_name_their_key() {
        let err =
            serde_yaml::from_str::<DcnConfig>("cross_parameterization: diagonal").unwrap_err();
        assert!(
            err.to_string()
                .contains("cross_parameterization: `vector` or `matrix` (got `diagonal`)"),
            "{err}"
        );
        let err = serde_yaml::from_str::<WdlConfig>("dnn_hidden_unit: [4]").unwrap_err();
        assert!(err.to_string().contains("dnn_hidden_unit"), "{err}");
        let x: XdeepfmConfig = serde_yaml::from_str("cin_layer_size: [3, 4]").unwrap();
        assert!(x.validate().unwrap_err().contains("model.cin_layer_size"));
        let n: NfmConfig = serde_yaml::from_str("bi_dropout: 1.0").unwrap();
        assert!(n.validate().unwrap_err().contains("model.bi_dropout"));
        let w: WdlConfig = serde_yaml::from_str("dnn_hidden_units: []\nl2: {linear: -1}").unwrap();
        assert!(w.validate().unwrap_err().contains("model.l2.linear"));
        let d: DlrmConfig = serde_yaml::from_str("top_mlp: [0]").unwrap();
        assert!(d.validate().unwrap_err().contains("model.top_mlp"));
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
