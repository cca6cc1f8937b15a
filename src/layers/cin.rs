//! The compressed interaction network of xDeepFM (Lian et al. 2018), as DeepCTR-Torch's `CIN`
//! (ReLU activation, 1x1 convolutions as linear maps over the field pairs).
use tch::{nn, Kind, Tensor};

/// CIN over `F` fields with one layer per entry of `sizes`.
#[derive(Debug)]
pub struct Cin {
    /// Per layer `[size, H_{k-1}·F]` weight and `[size]` bias (`conv1ds.{i}.weight` is
    /// `[size, H·F, 1]` in DeepCTR-Torch).
    layers: Vec<(Tensor, Tensor)>,
    sizes: Vec<usize>,
    split_half: bool,
}

impl Cin {
    /// torch's default Conv1d init: U(±1/√fan_in) for weights and biases.
    pub fn new(path: &nn::Path, fields: usize, sizes: &[usize], split_half: bool) -> Cin {
        let mut hidden = fields;
        let mut layers = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let fan_in = (hidden * fields) as i64;
            let bound = 1.0 / (fan_in as f64).sqrt();
            let p = path / "conv1ds" / i;
            layers.push((
                p.uniform("weight", &[size as i64, fan_in], -bound, bound),
                p.uniform("bias", &[size as i64], -bound, bound),
            ));
            hidden = if split_half && i + 1 < sizes.len() {
                size / 2
            } else {
                size
            };
        }
        Cin {
            layers,
            sizes: sizes.to_vec(),
            split_half,
        }
    }

    /// Width of the output: the feature maps sent to the output of every layer.
    pub fn output_width(sizes: &[usize], split_half: bool) -> usize {
        if split_half {
            sizes[..sizes.len() - 1].iter().sum::<usize>() / 2 + sizes[sizes.len() - 1]
        } else {
            sizes.iter().sum()
        }
    }

    /// An upper bound on the floats per example that `forward` holds at once without autograd:
    /// a layer's outer product `[H·F, d]` twice (it and a reordered copy for the product with
    /// the weights), its output, the input maps and the outputs kept so far. What evaluation
    /// batches are sized by; keep it an upper bound when `forward` changes.
    pub fn activation_floats_per_row(
        fields: usize,
        dim: usize,
        sizes: &[usize],
        split_half: bool,
    ) -> usize {
        let (mut hidden, mut kept, mut largest) = (fields, 0, 0);
        for (i, &size) in sizes.iter().enumerate() {
            let layer = (2 * hidden * fields + hidden + size) * dim;
            largest = largest.max(layer + kept);
            kept += size * dim;
            hidden = if split_half && i + 1 < sizes.len() {
                size / 2
            } else {
                size
            };
        }
        largest + fields * dim + Cin::output_width(sizes, split_half)
    }

    /// `[B, F, d]` → `[B, output_width]`.
    pub fn forward(&self, x0: &Tensor) -> Tensor {
        let mut hidden = x0.shallow_clone();
        let mut outputs = Vec::new();
        let last = self.layers.len() - 1;
        for (i, (w, bias)) in self.layers.iter().enumerate() {
            // z[b, h·m, d] = hidden[b, h, d] · x0[b, m, d]
            let z = Tensor::einsum("bhd,bmd->bhmd", &[&hidden, x0], None::<&[i64]>).flatten(1, 2);
            let out = (w.matmul(&z) + bias.view([1, -1, 1])).relu();
            if self.split_half && i < last {
                let half = (self.sizes[i] / 2) as i64;
                let parts = out.split_with_sizes([half, half], 1);
                hidden = parts[0].shallow_clone();
                outputs.push(parts[1].shallow_clone());
            } else {
                hidden = out.shallow_clone();
                outputs.push(out);
            }
        }
        Tensor::cat(&outputs, 1).sum_dim_intlist(-1, false, x0.kind())
    }

    /// Σ w² over the convolution weights (DeepCTR's `l2_reg_cin` term).
    pub fn weight_square_sum(&self) -> Tensor {
        self.layers
            .iter()
            .map(|(w, _)| w.square().sum(Kind::Float))
            .reduce(|a, b| a + b)
            .expect("CIN has at least one layer")
    }

    /// `{prefix}conv1ds.{i}.weight` `[size, H·F, 1]` and `.bias` `[size]` per layer.
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            out.push((format!("{prefix}conv1ds.{i}.weight"), w.unsqueeze(2)));
            out.push((format!("{prefix}conv1ds.{i}.bias"), b.shallow_clone()));
        }
        out
    }
}
