//! The DeepCTR-Torch family (WDL, DeepFM, NFM, xDeepFM, DCN, AutoInt) as one composition, the
//! embedding → interaction → over arch of TorchRec's DLRM:
//!
//! ```text
//! logit = linear_model(linear table rows, dense)             the linear ("wide") logit
//!       + a term over the embeddings                          DeepFM's FM, xDeepFM's cin_linear(CIN)
//!       + dnn_linear([stacked output, dnn(input)])            DCN's cross network, AutoInt's attention
//!       + out.bias
//! input = [flatten(embeddings), dense]                        [bi-interaction pooling, dense] for NFM
//! ```
//!
//! Each model's file declares its [`Interaction`] and DNN settings ([`DeepSpec`]); this module
//! builds and runs them. Reference: DeepCTR-Torch 0.3.0, `models/basemodel.py`, `layers/core.py`,
//! `inputs.py` and the model files.
//!
//! Under multi-embedding (xDeepFM only, paper 004's MultiXDeepFM), every set has its own CIN and
//! its own first DNN layer (`dnn_set{m}`); the CIN outputs are averaged before `cin_linear`, the
//! first layers' outputs before the rest of the DNN. The linear part stays single. With one set
//! the model is DeepCTR-Torch's.
//!
//! Variables are created in a fixed order (CIN or cross network, then the DNN, `dnn_linear`, the
//! linear part's dense weight and `out.bias`, then attention layers), the order of the models'
//! earlier separate implementations: a seed gives the same initial weights as before.
use std::cell::RefCell;

use tch::{nn, nn::Module, Kind, Tensor};

use super::setwise::mean_over_sets;
use super::{Features, Network, NetworkShape};
use crate::layers::{
    bi_interaction, fm_cross_term, AttentionTape, Cin, CinTape, CrossNet, Dnn, InteractingLayer,
    LinearPart,
};

/// DeepCTR-Torch's `init_std` for embeddings, the linear part and DNN weights.
pub const INIT_STD: f64 = 1e-4;

/// `[flatten(emb), dense]`: `[B, F·d + m]`, the DNN input of DeepCTR-Torch models.
pub fn combined_dnn_input(emb: &Tensor, dense: &Tensor) -> Tensor {
    Tensor::cat(&[emb.flatten(1, -1), dense.shallow_clone()], 1)
}

/// A bias-free `nn.Linear` as torch initialises it (DeepCTR-Torch's `dnn_linear`, `cin_linear`):
/// weights U(±1/√fan_in). tch's default (Kaiming uniform with the ReLU gain) reaches √6 times
/// further, which trains differently: DCN with MLET tables lost about 0.01 test AUC to
/// DeepCTR-Torch with it (docs/benchmarks.md).
fn torch_linear_without_bias(fan_in: usize) -> nn::LinearConfig {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::LinearConfig {
        ws_init: nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
        bias: false,
        ..Default::default()
    }
}

/// The DNN of a DeepCTR model and its L2 penalty.
pub struct DeepSpec<'a> {
    /// `dnn_hidden_units`; empty: no DNN.
    pub hidden: &'a [usize],
    pub dropout: f64,
    /// `l2_reg_dnn` on the DNN weights (not the biases).
    pub l2_dnn: f64,
    /// How `dnn_linear` is penalised.
    pub head_l2: HeadL2,
}

/// The L2 penalty of `dnn_linear`, which differs between DeepCTR-Torch's models.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HeadL2 {
    /// With the DNN's `l2_reg_dnn` (WDL, DeepFM, NFM, xDeepFM).
    Dnn,
    /// With its own coefficient (DCN: `l2_reg_linear`).
    Own(f64),
    /// Not penalised (AutoInt).
    None,
}

/// What a model adds to the linear logit and the DNN.
pub enum Interaction<'a> {
    /// WDL (and DeepFM with `use_fm: false`).
    None,
    /// DeepFM: the FM second-order term `½ Σ_k [(Σ_i e_ik)² − Σ_i e_ik²]` added to the logit.
    Fm,
    /// NFM: bi-interaction pooling of the embeddings, with dropout, replaces the flattened
    /// embeddings in the DNN input.
    BiPooling { dropout: f64 },
    /// xDeepFM: `cin_linear(CIN(embeddings))` added to the logit (none with no CIN layers);
    /// `l2` (DeepCTR's `l2_reg_cin`) penalises the convolution weights, not `cin_linear`.
    Cin {
        layer_size: &'a [usize],
        split_half: bool,
        l2: f64,
    },
    /// DCN: the cross network over the DNN input, stacked before the DNN output into
    /// `dnn_linear`; `l2` (DeepCTR's `l2_reg_cross`) penalises the kernels. With no layers
    /// DeepCTR-Torch still registers an empty `crossnet`, which its state dict keeps.
    Cross {
        layers: usize,
        matrix: bool,
        l2: f64,
    },
    /// AutoInt: interacting (multi-head self-attention) layers over the embeddings, flattened
    /// and stacked before the DNN output into `dnn_linear`.
    Attention {
        layers: usize,
        heads: usize,
        residual: bool,
    },
}

/// An [`Interaction`] with its layers.
enum Built {
    None,
    Fm,
    BiPooling {
        dropout: f64,
    },
    /// One CIN per embedding set (set 0 under `cin`, set m under `cin_set{m}`) and `cin_linear`.
    Cin {
        cins: Vec<Cin>,
        linear: nn::Linear,
        l2: f64,
    },
    Cross {
        /// None with no layers (deep only).
        net: Option<CrossNet>,
        /// `[0, D, D or 1]`: the shape of DeepCTR-Torch's empty `crossnet.kernels`.
        empty: (i64, i64),
        l2: f64,
    },
    Attention(Vec<InteractingLayer>),
}

/// The parts every DeepCTR-Torch model shares: the linear logit, a DNN with its bias-free output
/// layer `dnn_linear`, and the prediction bias `out.bias`.
struct DeepParts {
    linear: LinearPart,
    dnn: Option<Dnn>,
    /// `dnn_linear`: the bias-free output layer over [stacked features, DNN output].
    head: Option<nn::Linear>,
    out_bias: Tensor,
    l2_dnn: f64,
}

impl DeepParts {
    /// `dnn_input` is the width of what the model feeds its DNN (none when `hidden` is empty);
    /// `stacked` is the width of what it stacks before the DNN output into `dnn_linear`.
    fn new(
        path: &nn::Path,
        num_dense: usize,
        dnn_input: usize,
        deep: &DeepSpec,
        hidden: &[usize],
        stacked: usize,
    ) -> DeepParts {
        let dnn = (!hidden.is_empty())
            .then(|| Dnn::new(&(path / "dnn"), dnn_input, hidden, deep.dropout, INIT_STD));
        let head_input = hidden.last().copied().unwrap_or(0) + stacked;
        let head = (head_input > 0).then(|| {
            nn::linear(
                path / "dnn_linear",
                head_input as i64,
                1,
                torch_linear_without_bias(head_input),
            )
        });
        DeepParts {
            linear: LinearPart::new(&(path / "linear_model"), num_dense, INIT_STD),
            dnn,
            head,
            out_bias: path.zeros("out_bias", &[1]),
            l2_dnn: deep.l2_dnn,
        }
    }

    /// `dnn_linear([stacked, dnn(input)])`: `[B, 1]`, or None when there is neither.
    fn dnn_logit(&self, input: &Tensor, stacked: Option<&Tensor>, train: bool) -> Option<Tensor> {
        let head = self.head.as_ref()?;
        let mut parts: Vec<Tensor> = stacked.into_iter().map(|e| e.shallow_clone()).collect();
        parts.extend(self.dnn.as_ref().map(|d| d.forward(input, train)));
        Some(head.forward(&Tensor::cat(&parts, 1)))
    }

    /// `l2_reg_dnn · Σ w²` over the DNN weights, and over `dnn_linear` when `with_head`.
    fn l2_penalty(&self, with_head: bool) -> Option<Tensor> {
        if self.l2_dnn == 0.0 {
            return None;
        }
        let mut terms: Vec<Tensor> = self.dnn.iter().map(|d| d.weight_square_sum()).collect();
        if with_head {
            terms.extend(self.head.iter().map(|h| h.ws.square().sum(Kind::Float)));
        }
        terms
            .into_iter()
            .reduce(|a, b| a + b)
            .map(|t| t * self.l2_dnn)
    }

    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.linear.state_dict();
        if let Some(dnn) = &self.dnn {
            out.extend(dnn.state_dict("dnn."));
        }
        if let Some(head) = &self.head {
            out.push(("dnn_linear.weight".into(), head.ws.shallow_clone()));
        }
        out.push(("out.bias".into(), self.out_bias.shallow_clone()));
        out
    }
}

/// A DeepCTR-Torch model: the linear logit, an interaction and a DNN (see the module's text).
pub struct DeepCtrModel {
    parts: DeepParts,
    interaction: Built,
    /// With several embedding sets: each set's first DNN layer (`dnn_set{m}`); `parts` holds
    /// the rest.
    first_layers: Vec<Dnn>,
    head_l2: HeadL2,
    /// `Network::activation_floats_per_row`, from the shapes.
    activation_floats: usize,
    /// What the last training forward pass kept for `Network::backward_deferred`.
    tapes: RefCell<Tapes>,
}

/// The interactions that compute their own backward pass in training, as recorded by the last
/// training forward pass.
#[derive(Default)]
enum Tapes {
    #[default]
    None,
    /// One per embedding set.
    Cin(Vec<CinTape>),
    Attention(AttentionTape),
}

impl DeepCtrModel {
    /// Several embedding sets need an interaction that is not stacked into `dnn_linear` (the
    /// models that take sets are checked before: only xDeepFM does).
    pub fn new(
        path: &nn::Path,
        shape: &NetworkShape,
        deep: DeepSpec,
        interaction: Interaction,
    ) -> DeepCtrModel {
        let (fields, dim, sets) = (shape.fields, shape.dim, shape.sets);
        let flat = shape.flat_width();
        let dnn_input = match interaction {
            Interaction::BiPooling { .. } => dim + shape.num_dense,
            _ => flat,
        };
        let stacked = match interaction {
            Interaction::Cross { layers, .. } if layers > 0 => flat,
            Interaction::Attention { layers, .. } if layers > 0 => fields * dim,
            _ => 0,
        };
        assert!(
            sets == 1 || stacked == 0,
            "one embedding set for an interaction stacked into dnn_linear"
        );
        let hidden = deep.hidden;
        // the interaction's intermediates; attention layers run one after another
        let interaction_floats = match interaction {
            Interaction::None => 0,
            Interaction::Fm | Interaction::BiPooling { .. } => 2 * fields * dim,
            Interaction::Cin { layer_size: [], .. } => 0,
            Interaction::Cin {
                layer_size,
                split_half,
                ..
            } => sets * Cin::activation_floats_per_row(fields, dim, layer_size, split_half),
            Interaction::Cross { layers, .. } => 3 * layers * flat,
            Interaction::Attention { heads, .. } => 6 * fields * dim + 2 * heads * fields * fields,
        };
        let activation_floats = sets * (dnn_input + hidden.first().copied().unwrap_or(0))
            + hidden.iter().sum::<usize>()
            + stacked
            + interaction_floats;
        // CIN and cross network first, the DNN next, attention layers last
        let mut built = match interaction {
            Interaction::None => Built::None,
            Interaction::Fm => Built::Fm,
            Interaction::BiPooling { dropout } => Built::BiPooling { dropout },
            Interaction::Cin { layer_size: [], .. } => Built::None,
            Interaction::Cin {
                layer_size,
                split_half,
                l2,
            } => {
                let cins = (0..sets)
                    .map(|m| {
                        let name = if m == 0 {
                            "cin".into()
                        } else {
                            format!("cin_set{m}")
                        };
                        Cin::new(&(path / name), fields, layer_size, split_half)
                    })
                    .collect();
                let width = Cin::output_width(layer_size, split_half);
                let linear = nn::linear(
                    path / "cin_linear",
                    width as i64,
                    1,
                    torch_linear_without_bias(width),
                );
                Built::Cin { cins, linear, l2 }
            }
            Interaction::Cross { layers, matrix, l2 } => Built::Cross {
                net: (layers > 0)
                    .then(|| CrossNet::new(&(path / "crossnet"), flat, layers, matrix)),
                empty: (flat as i64, if matrix { flat as i64 } else { 1 }),
                l2,
            },
            // built after the DNN
            Interaction::Attention { .. } => Built::Attention(Vec::new()),
        };
        let (parts, first_layers) = if sets == 1 || hidden.is_empty() {
            let parts = DeepParts::new(path, shape.num_dense, dnn_input, &deep, hidden, stacked);
            (parts, Vec::new())
        } else {
            let first = (0..sets)
                .map(|m| {
                    Dnn::new(
                        &(path / format!("dnn_set{m}")),
                        dnn_input,
                        &hidden[..1],
                        deep.dropout,
                        INIT_STD,
                    )
                })
                .collect();
            // a one-layer DNN: the averaged first layers feed dnn_linear directly
            let stacked = if hidden.len() == 1 { hidden[0] } else { 0 };
            let rest = DeepParts::new(
                path,
                shape.num_dense,
                hidden[0],
                &deep,
                &hidden[1..],
                stacked,
            );
            (rest, first)
        };
        if let Interaction::Attention {
            layers,
            heads,
            residual,
        } = interaction
        {
            built = Built::Attention(
                (0..layers)
                    .map(|i| {
                        InteractingLayer::new(&(path / "int_layers" / i), dim, heads, residual)
                    })
                    .collect(),
            );
        }
        DeepCtrModel {
            parts,
            interaction: built,
            first_layers,
            head_l2: deep.head_l2,
            activation_floats,
            tapes: RefCell::new(Tapes::None),
        }
    }

    /// The DNN's input from one set's `[B, F, d]` embeddings.
    fn dnn_input(&self, emb: &Tensor, dense: &Tensor, train: bool) -> Tensor {
        match self.interaction {
            Built::BiPooling { dropout } => combined_dnn_input(
                &bi_interaction(emb).dropout(dropout, train).unsqueeze(1),
                dense,
            ),
            _ => combined_dnn_input(emb, dense),
        }
    }
}

impl Network for DeepCtrModel {
    /// Logits `[B]` from `emb` `[B, M·F, d]`, `dense` `[B, m]` and `linear` `[B, F, 1]`.
    ///
    /// Operations on the embeddings run in the order of the earlier per-model code (attention
    /// before the DNN input, cross network after it), so that gradients accumulate in the same
    /// order and training is bitwise the same.
    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let sparse = x
            .linear
            .expect("DeepCTR-style models are built with a linear table");
        let mut logit = self.parts.linear.forward(sparse, x.dense);
        // each set's [B, F, d], split once for the CINs and the first layers
        let per_set =
            matches!(self.interaction, Built::Cin { .. }) || !self.first_layers.is_empty();
        let sets = if per_set {
            x.set_embeddings()
        } else {
            Vec::new()
        };
        match &self.interaction {
            Built::Fm => logit += fm_cross_term(x.emb),
            Built::Cin { cins, linear, .. } => {
                // training: the CINs keep no outer products and compute their backward pass in
                // `backward_deferred`, recomputing them (xDeepFM's activations are mostly these)
                let features = if train && x.emb.requires_grad() {
                    let tapes: Vec<CinTape> = cins
                        .iter()
                        .zip(&sets)
                        .map(|(c, e)| c.forward_recomputing(e))
                        .collect();
                    let outputs = tapes.iter().map(|t| t.output.shallow_clone()).collect();
                    *self.tapes.borrow_mut() = Tapes::Cin(tapes);
                    outputs
                } else {
                    cins.iter().zip(&sets).map(|(c, e)| c.forward(e)).collect()
                };
                logit += linear.forward(&mean_over_sets(features));
            }
            _ => {}
        }
        let deep = if self.first_layers.is_empty() {
            let attended = match &self.interaction {
                Built::Attention(layers) if !layers.is_empty() => {
                    // training: the layers' own backward pass in `backward_deferred`
                    let tape = (train && x.emb.requires_grad())
                        .then(|| AttentionTape::record(layers, x.emb))
                        .flatten();
                    let h = match tape {
                        Some(tape) => {
                            let output = tape.output.shallow_clone();
                            *self.tapes.borrow_mut() = Tapes::Attention(tape);
                            output
                        }
                        None => layers
                            .iter()
                            .fold(x.emb.shallow_clone(), |h, layer| layer.forward(&h)),
                    };
                    Some(h.flatten(1, -1))
                }
                _ => None,
            };
            let input = self.dnn_input(x.emb, x.dense, train);
            let stacked = match &self.interaction {
                Built::Cross { net: Some(c), .. } => Some(c.forward(&input)),
                _ => attended,
            };
            self.parts.dnn_logit(&input, stacked.as_ref(), train)
        } else {
            let first = self
                .first_layers
                .iter()
                .zip(&sets)
                .map(|(l, e)| l.forward(&self.dnn_input(e, x.dense, train), train))
                .collect();
            let first = mean_over_sets(first);
            match self.parts.dnn {
                Some(_) => self.parts.dnn_logit(&first, None, train),
                None => self.parts.dnn_logit(&first, Some(&first), train),
            }
        };
        if let Some(deep) = deep {
            logit += deep;
        }
        // the prediction bias: [B, 1] → logits [B] (DeepCTR's output is their sigmoid)
        (logit + &self.parts.out_bias).squeeze_dim(1)
    }

    fn activation_floats_per_row(&self) -> usize {
        self.activation_floats
    }

    /// DeepCTR-Torch's penalties: `l2_reg_dnn` on the DNN weights (and on `dnn_linear` where
    /// [`HeadL2::Dnn`]), the interaction's own coefficient on CIN or cross weights, and DCN's
    /// `l2_reg_linear` on `dnn_linear`.
    fn l2_penalty(&self) -> Option<Tensor> {
        let l2_dnn = self.parts.l2_dnn;
        let first_layers = (l2_dnn > 0.0 && !self.first_layers.is_empty()).then(|| {
            self.first_layers
                .iter()
                .map(|l| l.weight_square_sum())
                .reduce(|a, b| a + b)
                .expect("non-empty")
                * l2_dnn
        });
        let interaction = match &self.interaction {
            Built::Cin { cins, l2, .. } if *l2 > 0.0 => Some(
                cins.iter()
                    .map(|c| c.weight_square_sum())
                    .reduce(|a, b| a + b)
                    .expect("one CIN per set")
                    * *l2,
            ),
            Built::Cross {
                net: Some(c), l2, ..
            } if *l2 > 0.0 => Some(c.kernel_square_sum() * *l2),
            _ => None,
        };
        let head = match self.head_l2 {
            HeadL2::Own(l2) if l2 > 0.0 => self
                .parts
                .head
                .as_ref()
                .map(|h| h.ws.square().sum(Kind::Float) * l2),
            _ => None,
        };
        [
            self.parts.l2_penalty(self.head_l2 == HeadL2::Dnn),
            first_layers,
            interaction,
            head,
        ]
        .into_iter()
        .flatten()
        .reduce(|a, b| a + b)
    }

    fn backward_deferred(&self) -> Option<Tensor> {
        let tapes = std::mem::take(&mut *self.tapes.borrow_mut());
        match (tapes, &self.interaction) {
            (Tapes::Cin(tapes), Built::Cin { cins, .. }) => {
                let inputs: Vec<Tensor> = cins
                    .iter()
                    .zip(&tapes)
                    .map(|(c, t)| c.backward_recomputing(t))
                    .collect();
                // the sets were chunks of the embeddings along the fields
                Some(Tensor::cat(&inputs, 1))
            }
            (Tapes::Attention(tape), Built::Attention(layers)) => Some(tape.backward(layers)),
            _ => None,
        }
    }

    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.parts.state_dict();
        match &self.interaction {
            Built::Cin { cins, linear, .. } => {
                out.extend(cins[0].state_dict("cin."));
                out.push(("cin_linear.weight".into(), linear.ws.shallow_clone()));
            }
            Built::Cross { net: Some(c), .. } => out.extend(c.state_dict("crossnet.")),
            Built::Cross {
                net: None,
                empty: (d, cols),
                ..
            } => {
                let device = out.last().map_or(tch::Device::Cpu, |(_, t)| t.device());
                let empty = |c: i64| Tensor::zeros([0, *d, c], (Kind::Float, device));
                out.push(("crossnet.kernels".into(), empty(*cols)));
                out.push(("crossnet.bias".into(), empty(1)));
            }
            Built::Attention(layers) => {
                for (i, layer) in layers.iter().enumerate() {
                    out.extend(layer.state_dict(&format!("int_layers.{i}.")));
                }
            }
            Built::None | Built::Fm | Built::BiPooling { .. } => {}
        }
        out
    }
}
