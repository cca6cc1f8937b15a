//! The compressed interaction network of xDeepFM (Lian et al. 2018), as DeepCTR-Torch's `CIN`
//! (ReLU activation, 1x1 convolutions as linear maps over the field pairs).
//!
//! Computed as one GEMM per layer on rows `n = (b, d)`: `x^{k+1} = ReLU(z^k W_kᵀ + b_k)` with
//! `z^k[n, h·F + m] = x^k[n, h] · x^0[n, m]`, the outer product in the order of the weight's
//! columns (DeepCTR's `einsum('bhd,bmd->bhmd')` reshaped to `[B, H·F, d]` and convolved is
//! the same sum). Each layer's output `[N, H_{k+1}]` is the next layer's input as it stands.
use tch::{nn, Kind, Tensor};

/// Bytes of the largest outer product of one slice of the batch: below glibc's largest mmap
/// threshold (32 MiB), so that the slices' intermediates are reused from the heap instead of
/// being mapped and page-faulted afresh on every step (1.2-1.3x the rate of the unsliced
/// batch on one core). The price is more, shorter parallel regions: where other processes
/// keep the cores busy, OpenMP's spin-waiting threads then wait for each other, which
/// `OMP_WAIT_POLICY=PASSIVE` avoids.
const SLICE_BYTES: i64 = 16 << 20;
/// At least this many samples per slice: a module traced at a smaller batch (the export traces
/// at batch 2) records no split and so takes any batch size.
const MIN_SAMPLES_PER_SLICE: i64 = 8;

/// CIN over `F` fields with one layer per entry of `sizes`.
#[derive(Debug)]
pub struct Cin {
    /// Per layer `[size, H_{k-1}·F]` weight and `[size]` bias (`conv1ds.{i}.weight` is
    /// `[size, H·F, 1]` in DeepCTR-Torch).
    layers: Vec<(Tensor, Tensor)>,
    sizes: Vec<usize>,
    split_half: bool,
    first: FieldPairs,
    /// `max_k H_k·F`: the widest outer product.
    widest: i64,
}

/// The first layer's outer product `x^0 ⊗ x^0` is symmetric: it is computed on the `F(F+1)/2`
/// pairs `h ≤ m` only, with the weight folded onto them (`W[o, h, m] + W[o, m, h]`), which
/// halves that layer's GEMMs. The same sum as the definition's, in another order.
#[derive(Debug)]
struct FieldPairs {
    fields: i64,
    /// `[P]`: `h` and `m` of each pair.
    left: Tensor,
    right: Tensor,
    /// `[P]`: the pair's column `h·F + m` in the weight.
    columns: Tensor,
    /// `[F, F]`: 1 off the diagonal, ½ on it (where `W + Wᵀ` counts `W[o, h, h]` twice).
    fold: Tensor,
}

impl FieldPairs {
    fn new(fields: i64, device: tch::Device) -> FieldPairs {
        let pairs: Vec<(i64, i64)> = (0..fields)
            .flat_map(|h| (h..fields).map(move |m| (h, m)))
            .collect();
        let index = |f: &dyn Fn(&(i64, i64)) -> i64| {
            Tensor::from_slice(&pairs.iter().map(f).collect::<Vec<_>>()).to_device(device)
        };
        let fold = Tensor::ones([fields, fields], (Kind::Float, device))
            - Tensor::eye(fields, (Kind::Float, device)) * 0.5;
        FieldPairs {
            fields,
            left: index(&|p| p.0),
            right: index(&|p| p.1),
            columns: index(&|p| p.0 * fields + p.1),
            fold,
        }
    }

    /// `[N, F]` → `[N, P]`: `x[n, h] · x[n, m]` for `h ≤ m`.
    fn products(&self, x0: &Tensor) -> Tensor {
        x0.index_select(1, &self.left) * x0.index_select(1, &self.right)
    }

    /// `[O, F·F]` → `[O, P]`.
    fn fold(&self, w: &Tensor) -> Tensor {
        let f = self.fields;
        let square = w.view([-1, f, f]);
        ((&square + square.transpose(1, 2)) * &self.fold.to_kind(w.kind()))
            .view([-1, f * f])
            .index_select(1, &self.columns)
    }
}

impl Cin {
    /// torch's default Conv1d init: U(±1/√fan_in) for weights and biases.
    pub fn new(path: &nn::Path, fields: usize, sizes: &[usize], split_half: bool) -> Cin {
        let mut hidden = fields;
        let mut layers = Vec::new();
        let mut widest = 0;
        for (i, &size) in sizes.iter().enumerate() {
            let fan_in = (hidden * fields) as i64;
            widest = widest.max(fan_in);
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
            first: FieldPairs::new(fields as i64, path.device()),
            widest,
        }
    }

    /// Rows `(b, d)` per slice of the batch (see [`SLICE_BYTES`]).
    pub fn rows_per_slice(&self) -> i64 {
        SLICE_BYTES / (4 * self.widest)
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
    /// a layer's outer product `[H·F, d]` twice, its output, the input maps and the outputs kept
    /// so far (`forward` slices the batch, so the outer products are bounded per slice and this
    /// overestimates them). What evaluation batches are sized by; keep it an upper bound when
    /// `forward` changes.
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

    /// `[B, F, d]` → `[B, output_width]`, in slices of [`Cin::rows_per_slice`] rows.
    pub fn forward(&self, x0: &Tensor) -> Tensor {
        let size = x0.size();
        let per_slice = (self.rows_per_slice() / size[2]).max(MIN_SAMPLES_PER_SLICE);
        if size[0] <= per_slice {
            return self.forward_slice(x0);
        }
        let slices: Vec<Tensor> = x0
            .split(per_slice, 0)
            .iter()
            .map(|s| self.forward_slice(s))
            .collect();
        Tensor::cat(&slices, 0)
    }

    fn forward_slice(&self, x0: &Tensor) -> Tensor {
        let size = x0.size();
        let (fields, dim) = (size[1], size[2]);
        // rows n = (b, d); the batch stays -1 so that a traced module takes any batch size
        let x0 = x0.transpose(1, 2).reshape([-1, fields]);
        let x0_row = x0.unsqueeze(1);
        let mut hidden = x0.shallow_clone();
        let mut outputs = Vec::new();
        let last = self.layers.len() - 1;
        for (i, (w, bias)) in self.layers.iter().enumerate() {
            let out = if i == 0 {
                bias.addmm(&self.first.products(&x0), &self.first.fold(w).tr())
            } else {
                // the outer product as a batch of rank-1 products, whose gradients are two
                // batched matrix-vector products (not two [N, H, F] products and their sums)
                let h = hidden.size()[1];
                let z = hidden.unsqueeze(2).bmm(&x0_row).view([-1, h * fields]);
                bias.addmm(&z, &w.tr())
            }
            .relu();
            if self.split_half && i < last {
                let half = (self.sizes[i] / 2) as i64;
                hidden = out.narrow(1, 0, half);
                outputs.push(out.narrow(1, half, half));
            } else {
                hidden = out.shallow_clone();
                outputs.push(out);
            }
        }
        let width = Cin::output_width(&self.sizes, self.split_half) as i64;
        // sum pooling over d: [B·d, width] → [B, width]
        Tensor::cat(&outputs, 1)
            .view([-1, dim, width])
            .sum_dim_intlist(1, false, x0.kind())
    }

    /// DeepCTR-Torch's formulation, `[B, H·F, d]` outer products and the convolution as a
    /// matmul over them: the reference that tests and `make bench` compare [`Cin::forward`]
    /// against.
    pub fn forward_deepctr_form(&self, x0: &Tensor) -> Tensor {
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
