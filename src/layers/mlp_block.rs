//! pytorch-fm's `MultiLayerPerceptron`, the MLP of paper 004's models (thuml/Multi-Embedding):
//! per hidden width Linear → BatchNorm1d → ReLU → Dropout, then an optional output Linear.
//!
//! A block is any slice of such an MLP, so a model can split one: paper 004's multi-embedding
//! puts each embedding set through its own first hidden layer, averages, and shares the rest
//! (`first = [in → 400]`, `rest = [400 → 400 → 1]`). FuxiCTR's `MLP_Block` is the same stack
//! (its batch norm is optional too); it is what the parity tests compare against.
use tch::{nn, nn::Module, nn::ModuleT, Kind, Tensor};

/// How the linear layers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearInit {
    /// torch's `nn.Linear` default (what pytorch-fm, hence paper 004's code, keeps): weight and
    /// bias ~ U(±1/√fan_in). Not tch's default, whose weight bound is √6 times wider.
    #[default]
    TorchDefault,
    /// FuxiCTR's `BaseModel.reset_parameters`: weight Xavier-normal, bias zero.
    XavierNormalZeroBias,
}

/// The shape of a block; `Default` is an empty block (no layers) with torch's init.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MlpBlockConfig {
    /// Hidden widths, each Linear → [BatchNorm1d] → ReLU → Dropout.
    pub hidden: Vec<usize>,
    /// Dropout probability after every hidden ReLU (applied only in training).
    pub dropout: f64,
    /// BatchNorm1d (eps 1e-5, momentum 0.1, weight 1, bias 0) after every hidden Linear.
    pub batch_norm: bool,
    /// A final Linear to this width with bias and no activation: `Some(1)` is pytorch-fm's
    /// `output_layer=True`.
    pub output: Option<usize>,
    pub init: LinearInit,
}

#[derive(Debug)]
struct HiddenLayer {
    linear: nn::Linear,
    norm: Option<nn::BatchNorm>,
}

/// A slice of pytorch-fm's MLP. VarStore names follow the index each module would have in
/// torch's `nn.Sequential` (pytorch-fm's layout): with batch norm, hidden layer `i` is
/// `mlp.{4i}` (Linear: `weight`, `bias`) and `mlp.{4i+1}` (BatchNorm1d: `weight`, `bias`,
/// `running_mean`, `running_var`; the last two not trainable), ReLU and Dropout take `4i+2`,
/// `4i+3`; without batch norm the stride is 3; the output Linear comes last.
#[derive(Debug)]
pub struct MlpBlock {
    hidden: Vec<HiddenLayer>,
    output: Option<nn::Linear>,
    dropout: f64,
    input: usize,
}

/// A Linear `input → output` with bias, started as `init` says.
pub(crate) fn linear(path: nn::Path, input: usize, output: usize, init: LinearInit) -> nn::Linear {
    let (fan_in, fan_out) = (input as f64, output as f64);
    let (ws_init, bs_init) = match init {
        LinearInit::TorchDefault => {
            let bound = 1.0 / fan_in.sqrt();
            let u = nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            (u, u)
        }
        LinearInit::XavierNormalZeroBias => (
            nn::Init::Randn {
                mean: 0.0,
                stdev: (2.0 / (fan_in + fan_out)).sqrt(),
            },
            nn::Init::Const(0.0),
        ),
    };
    let cfg = nn::LinearConfig {
        ws_init,
        bs_init: Some(bs_init),
        bias: true,
    };
    nn::linear(path, input as i64, output as i64, cfg)
}

/// torch's `BatchNorm1d(width)` as it starts (eps 1e-5, momentum 0.1, scale 1, shift 0; tch's
/// default would start the scale uniform in [0, 1)).
pub fn batch_norm1d(path: nn::Path, width: usize) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        eps: 1e-5,
        momentum: 0.1,
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm1d(path, width as i64, cfg)
}

impl MlpBlock {
    pub fn new(path: &nn::Path, input: usize, cfg: &MlpBlockConfig) -> MlpBlock {
        let seq = path / "mlp";
        let stride = if cfg.batch_norm { 4 } else { 3 };
        let mut width = input;
        let mut hidden = Vec::with_capacity(cfg.hidden.len());
        for (i, &h) in cfg.hidden.iter().enumerate() {
            let linear = linear(&seq / (stride * i), width, h, cfg.init);
            let norm = cfg
                .batch_norm
                .then(|| batch_norm1d(&seq / (stride * i + 1), h));
            hidden.push(HiddenLayer { linear, norm });
            width = h;
        }
        let output = cfg
            .output
            .map(|o| linear(&seq / (stride * cfg.hidden.len()), width, o, cfg.init));
        MlpBlock {
            hidden,
            output,
            dropout: cfg.dropout,
            input,
        }
    }

    /// The linear layers in order (hidden ones, then the output layer), for exporting weights
    /// under another library's names.
    pub fn linears(&self) -> Vec<&nn::Linear> {
        let hidden = self.hidden.iter().map(|h| &h.linear);
        hidden.chain(self.output.as_ref()).collect()
    }

    pub fn has_batch_norm(&self) -> bool {
        self.hidden.iter().any(|h| h.norm.is_some())
    }

    pub fn input_width(&self) -> usize {
        self.input
    }

    /// Width of what `forward` returns: the output layer's, else the last hidden width, else
    /// the input's (an empty block is the identity).
    pub fn output_width(&self) -> usize {
        match (&self.output, self.hidden.last()) {
            (Some(o), _) => o.ws.size()[0] as usize,
            (None, Some(h)) => h.linear.ws.size()[0] as usize,
            (None, None) => self.input,
        }
    }

    /// `[B, input]` → `[B, output_width]`. In training, batch norm normalises by the batch's
    /// statistics and updates the running ones, and dropout is on; otherwise batch norm uses
    /// the running statistics and dropout is off.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for layer in &self.hidden {
            h = layer.linear.forward(&h);
            if let Some(bn) = &layer.norm {
                h = bn.forward_t(&h, train);
            }
            h = h.relu().dropout(self.dropout, train);
        }
        match &self.output {
            Some(o) => o.forward(&h),
            None => h,
        }
    }

    /// Σ w² over the Linear weights (not biases, not batch norm's scale and shift).
    pub fn weight_square_sum(&self) -> Tensor {
        self.hidden
            .iter()
            .map(|l| &l.linear)
            .chain(&self.output)
            .map(|l| l.ws.square().sum(l.ws.kind()))
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, tch::Device::Cpu)))
    }

    /// Parameters and batch-norm statistics under pytorch-fm's names (see the type's doc),
    /// prefixed by `prefix` (e.g. `mlp_first.`); batch norm's `num_batches_tracked` is left out
    /// (tch keeps no such counter; with momentum 0.1 torch does not use it).
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let stride = if self.hidden.iter().any(|l| l.norm.is_some()) {
            4
        } else {
            3
        };
        let mut out = Vec::new();
        let push_linear = |k: usize, l: &nn::Linear, out: &mut Vec<(String, Tensor)>| {
            out.push((format!("{prefix}mlp.{k}.weight"), l.ws.shallow_clone()));
            if let Some(b) = &l.bs {
                out.push((format!("{prefix}mlp.{k}.bias"), b.shallow_clone()));
            }
        };
        for (i, layer) in self.hidden.iter().enumerate() {
            push_linear(stride * i, &layer.linear, &mut out);
            if let Some(bn) = &layer.norm {
                let k = stride * i + 1;
                let affine = [("weight", &bn.ws), ("bias", &bn.bs)];
                for (name, t) in affine {
                    if let Some(t) = t {
                        out.push((format!("{prefix}mlp.{k}.{name}"), t.shallow_clone()));
                    }
                }
                for (name, t) in [
                    ("running_mean", &bn.running_mean),
                    ("running_var", &bn.running_var),
                ] {
                    out.push((format!("{prefix}mlp.{k}.{name}"), t.shallow_clone()));
                }
            }
        }
        if let Some(o) = &self.output {
            push_linear(stride * self.hidden.len(), o, &mut out);
        }
        out
    }
}
