//! xDeepFM (Lian et al. 2018, arXiv:1803.05170) as DeepCTR-Torch 0.3.0's `xDeepFM`: the linear
//! logit, `cin_linear(CIN(embeddings))`, and a DNN over [embeddings, dense].
use tch::{nn, nn::Module, Tensor};

use super::deepctr::{combined_dnn_input, sum_terms, DeepParts};
use super::{Features, InputShape, Network};
use crate::config::L2Config;
use crate::layers::Cin;

/// xDeepFM over `F` fields of dimension `d` and `m` dense features: CIN on `[B, F, d]`, DNN on
/// `[B, F·d + m]`; an empty `cin_layer_size` or `dnn_hidden_units` drops that part, as in
/// DeepCTR-Torch.
pub struct XDeepFm {
    parts: DeepParts,
    cin: Option<(Cin, nn::Linear)>,
    l2_cin: f64,
}

impl XDeepFm {
    /// `l2.dnn` penalises the DNN weights and `dnn_linear`, `l2.interaction` the CIN's
    /// convolution weights (DeepCTR's `l2_reg_cin`, 0 when None); `cin_linear` is not penalised.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &nn::Path,
        shape: &InputShape,
        dim: usize,
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
            (
                Cin::new(&(path / "cin"), fields, cin_sizes, split_half),
                nn::linear(path / "cin_linear", width, 1, cfg),
            )
        });
        XDeepFm {
            parts: DeepParts::new(path, shape.num_dense, input, hidden, dropout, l2.dnn, 0),
            cin,
            l2_cin: l2.interaction.unwrap_or(0.0),
        }
    }
}

impl Network for XDeepFm {
    /// Logits `[B]` from `emb` `[B, F, d]`, `dense` `[B, m]` and `linear` `[B, F, 1]`.
    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let mut logit = self.parts.linear_logit(x);
        if let Some((cin, out)) = &self.cin {
            logit += out.forward(&cin.forward(x.emb));
        }
        if let Some(deep) = self
            .parts
            .dnn_logit(&combined_dnn_input(x.emb, x.dense), None, train)
        {
            logit += deep;
        }
        self.parts.finish(logit)
    }

    fn l2_penalty(&self) -> Option<Tensor> {
        sum_terms([
            self.parts.l2_penalty(true),
            self.cin
                .as_ref()
                .filter(|_| self.l2_cin > 0.0)
                .map(|(c, _)| c.weight_square_sum() * self.l2_cin),
        ])
    }

    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.parts.state_dict();
        if let Some((cin, linear)) = &self.cin {
            out.extend(cin.state_dict("cin."));
            out.push(("cin_linear.weight".into(), linear.ws.shallow_clone()));
        }
        out
    }
}
