//! xDeepFM (Lian et al. 2018, arXiv:1803.05170) as DeepCTR-Torch 0.3.0's `xDeepFM`: the linear
//! logit, `cin_linear(CIN(embeddings))`, and a DNN over [embeddings, dense].
//!
//! Under multi-embedding (paper 004's MultiXDeepFM), every set has its own CIN and its own first
//! DNN layer; the CIN outputs are averaged before `cin_linear`, the first layers' outputs before
//! the rest of the DNN. The linear part stays single. With one set the model is DeepCTR-Torch's.
use tch::{nn, nn::Module, Tensor};

use super::deepctr::{combined_dnn_input, sum_terms, DeepParts, INIT_STD};
use super::setwise::mean_over_sets;
use super::{Features, InputShape, Network};
use crate::config::L2Config;
use crate::layers::{Cin, Dnn};

/// xDeepFM over `F` fields of dimension `d` and `m` dense features: CIN on `[B, F, d]`, DNN on
/// `[B, F·d + m]`; an empty `cin_layer_size` or `dnn_hidden_units` drops that part, as in
/// DeepCTR-Torch.
pub struct XDeepFm {
    parts: DeepParts,
    /// One CIN per embedding set (set 0 under `cin`, set m under `cin_set{m}`) and `cin_linear`.
    cin: Option<(Vec<Cin>, nn::Linear)>,
    /// With several sets: each set's first DNN layer (`dnn_set{m}`); `parts` holds the rest.
    first_layers: Vec<Dnn>,
    l2_cin: f64,
    l2_dnn: f64,
}

impl XDeepFm {
    /// `l2.dnn` penalises the DNN weights and `dnn_linear`, `l2.interaction` the CIN's
    /// convolution weights (DeepCTR's `l2_reg_cin`, 0 when None); `cin_linear` is not penalised.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &nn::Path,
        shape: &InputShape,
        dim: usize,
        sets: usize,
        hidden: &[usize],
        cin_sizes: &[usize],
        split_half: bool,
        dropout: f64,
        l2: &L2Config,
    ) -> XDeepFm {
        let fields = shape.cardinalities.len();
        let input = fields * dim + shape.num_dense;
        let cin = (!cin_sizes.is_empty()).then(|| {
            let width = Cin::output_width(cin_sizes, split_half) as i64;
            // torch's nn.Linear default U(±1/√fan_in); tch's default Kaiming bound is √6 times wider
            let bound = 1.0 / (width as f64).sqrt();
            let cfg = nn::LinearConfig {
                ws_init: nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                bias: false,
                ..Default::default()
            };
            let cins = (0..sets)
                .map(|m| {
                    let name = if m == 0 {
                        "cin".into()
                    } else {
                        format!("cin_set{m}")
                    };
                    Cin::new(&(path / name), fields, cin_sizes, split_half)
                })
                .collect();
            (cins, nn::linear(path / "cin_linear", width, 1, cfg))
        });
        let (parts, first_layers) = if sets == 1 || hidden.is_empty() {
            let parts = DeepParts::new(path, shape.num_dense, input, hidden, dropout, l2.dnn, 0);
            (parts, Vec::new())
        } else {
            let first = (0..sets)
                .map(|m| {
                    Dnn::new(
                        &(path / format!("dnn_set{m}")),
                        input,
                        &hidden[..1],
                        dropout,
                        INIT_STD,
                    )
                })
                .collect();
            // a one-layer DNN: the averaged first layers feed dnn_linear directly
            let extra = if hidden.len() == 1 { hidden[0] } else { 0 };
            let rest = DeepParts::new(
                path,
                shape.num_dense,
                hidden[0],
                &hidden[1..],
                dropout,
                l2.dnn,
                extra,
            );
            (rest, first)
        };
        XDeepFm {
            parts,
            cin,
            first_layers,
            l2_cin: l2.interaction.unwrap_or(0.0),
            l2_dnn: l2.dnn,
        }
    }
}

impl Network for XDeepFm {
    /// Logits `[B]` from `emb` `[B, F, d]`, `dense` `[B, m]` and `linear` `[B, F, 1]`.
    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let mut logit = self.parts.linear_logit(x);
        let sets = x.set_embeddings();
        if let Some((cins, out)) = &self.cin {
            let features = cins.iter().zip(&sets).map(|(c, e)| c.forward(e)).collect();
            logit += out.forward(&mean_over_sets(features));
        }
        let deep = if self.first_layers.is_empty() {
            self.parts
                .dnn_logit(&combined_dnn_input(x.emb, x.dense), None, train)
        } else {
            let first = self
                .first_layers
                .iter()
                .zip(&sets)
                .map(|(l, e)| l.forward(&combined_dnn_input(e, x.dense), train))
                .collect();
            let first = mean_over_sets(first);
            match self.parts.has_dnn() {
                true => self.parts.dnn_logit(&first, None, train),
                false => self.parts.dnn_logit(&first, Some(&first), train),
            }
        };
        if let Some(deep) = deep {
            logit += deep;
        }
        self.parts.finish(logit)
    }

    fn l2_penalty(&self) -> Option<Tensor> {
        let first_layers = (self.l2_dnn > 0.0 && !self.first_layers.is_empty()).then(|| {
            self.first_layers
                .iter()
                .map(|l| l.weight_square_sum())
                .reduce(|a, b| a + b)
                .expect("non-empty")
                * self.l2_dnn
        });
        sum_terms([
            self.parts.l2_penalty(true),
            first_layers,
            self.cin
                .as_ref()
                .filter(|_| self.l2_cin > 0.0)
                .map(|(cins, _)| {
                    cins.iter()
                        .map(|c| c.weight_square_sum())
                        .reduce(|a, b| a + b)
                        .expect("one CIN per set")
                        * self.l2_cin
                }),
        ])
    }

    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.parts.state_dict();
        if let Some((cins, linear)) = &self.cin {
            out.extend(cins[0].state_dict("cin."));
            out.push(("cin_linear.weight".into(), linear.ws.shallow_clone()));
        }
        out
    }
}
