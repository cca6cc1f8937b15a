//! The compressed interaction network of xDeepFM (Lian et al. 2018), as DeepCTR-Torch's `CIN`
//! (ReLU activation, 1x1 convolutions as linear maps over the field pairs).
//!
//! Computed as one GEMM per layer on rows `n = (b, d)`: `x^{k+1} = ReLU(z^k W_kᵀ + b_k)` with
//! `z^k[n, h·F + m] = x^k[n, h] · x^0[n, m]`, the outer product in the order of the weight's
//! columns (DeepCTR's `einsum('bhd,bmd->bhmd')` reshaped to `[B, H·F, d]` and convolved is
//! the same sum). Each layer's output `[N, H_{k+1}]` is the next layer's input as it stands.
use tch::{nn, Kind, Tensor};

use super::cin_loops;
use crate::grad::add_to_grad;

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
    /// `[F·F]`: the pair of column `h·F + m`, `(min(h, m), max(h, m))`.
    pair_of_column: Tensor,
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
        let pair_of = |h: i64, m: i64| {
            let (lo, hi) = (h.min(m), h.max(m));
            pairs
                .iter()
                .position(|&p| p == (lo, hi))
                .expect("every pair is listed") as i64
        };
        let pair_of_column: Vec<i64> = (0..fields)
            .flat_map(|h| (0..fields).map(move |m| (h, m)))
            .map(|(h, m)| pair_of(h, m))
            .collect();
        FieldPairs {
            fields,
            pair_of_column: Tensor::from_slice(&pair_of_column).to_device(device),
            left: index(&|p| p.0),
            right: index(&|p| p.1),
            columns: index(&|p| p.0 * fields + p.1),
            fold,
        }
    }

    /// `[N, F]` → `[N, P]`: `x[n, h] · x[n, m]` for `h ≤ m`.
    fn products(&self, x0: &Tensor) -> Tensor {
        // the loops where autograd need not see the product
        match x0.requires_grad() {
            false => cin_loops::pair_products(x0),
            true => None,
        }
        .unwrap_or_else(|| x0.index_select(1, &self.left) * x0.index_select(1, &self.right))
    }

    /// The gradient of `x` `[N, F]` from that of its pair products `[N, P]`.
    fn products_backward(&self, x: &Tensor, grad: &Tensor) -> Tensor {
        cin_loops::pair_products_backward(x, grad).unwrap_or_else(|| {
            x.zeros_like()
                .index_add(1, &self.left, &(grad * x.index_select(1, &self.right)))
                .index_add(1, &self.right, &(grad * x.index_select(1, &self.left)))
        })
    }

    /// The gradient of the weight `[O, F·F]` from that of its fold `[O, P]`: `W[o, h, m]`
    /// reaches the pair `(min, max)` once off the diagonal, twice by half on it.
    fn unfold(&self, grad: &Tensor) -> Tensor {
        grad.index_select(1, &self.pair_of_column)
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

/// What [`Cin::forward_recomputing`] keeps for its backward pass.
pub struct CinTape {
    /// `[B, output_width]`, a leaf: the loss's backward pass leaves its gradient here.
    pub output: Tensor,
    slices: Vec<CinSlice>,
    /// The first layer's weight folded onto the field pairs.
    folded: Tensor,
    /// The forward pass's buffer for the outer products, reused by the backward pass.
    scratch: Tensor,
    dim: i64,
}

/// One slice of the batch: its rows `x` `[N, F]` and every layer's output `[N, H_{k+1}]`.
struct CinSlice {
    x: Tensor,
    outs: Vec<Tensor>,
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
        let per_slice = self.samples_per_slice(x0.size()[2]);
        if x0.size()[0] <= per_slice {
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
        let x = x0.transpose(1, 2).reshape([-1, fields]);
        let outs = self.layer_outputs(&x, &self.first.fold(&self.layers[0].0), None);
        self.pool(&outs, dim)
    }

    /// Samples per slice of a batch of `dim`-wide embeddings (see [`SLICE_BYTES`]).
    fn samples_per_slice(&self, dim: i64) -> i64 {
        (self.rows_per_slice() / dim).max(MIN_SAMPLES_PER_SLICE)
    }

    /// Every layer's output `[N, H_{k+1}]` (after ReLU) from rows `x` `[N, F]`, with the first
    /// layer's weight `folded` onto the field pairs.
    fn layer_outputs(&self, x: &Tensor, folded: &Tensor, scratch: Option<&Tensor>) -> Vec<Tensor> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        for (i, (w, bias)) in self.layers.iter().enumerate() {
            let out = if i == 0 {
                bias.addmm(&self.first.products(x), &folded.tr())
            } else {
                let hidden = self.hidden(&outs, i);
                bias.addmm(&self.outer_into(&hidden, x, scratch), &w.tr())
            }
            .relu();
            outs.push(out);
        }
        outs
    }

    /// Layer `i`'s input maps `[N, H_i]` (`i ≥ 1`): the previous layer's output, its first half
    /// under `split_half`.
    fn hidden(&self, outs: &[Tensor], i: usize) -> Tensor {
        let previous = &outs[i - 1];
        if self.split_half {
            previous.narrow(1, 0, (self.sizes[i - 1] / 2) as i64)
        } else {
            previous.shallow_clone()
        }
    }

    /// `z[n, h·F + m] = hidden[n, h] · x[n, m]`: a broadcast product, 2-3x faster than a batch
    /// of rank-1 `bmm`s and the same bits (nothing differentiates it through autograd in
    /// training, see [`Cin::backward_recomputing`]).
    fn outer(&self, hidden: &Tensor, x: &Tensor) -> Tensor {
        let (h, fields) = (hidden.size()[1], x.size()[1]);
        (hidden.unsqueeze(2) * x.unsqueeze(1)).view([-1, h * fields])
    }

    /// [`Cin::outer`], written into the front of `scratch` (a flat buffer of a slice's rows
    /// · H·F floats or more, [`Cin::scratch`]) where one is given: the recomputing passes reuse one
    /// buffer for every slice and layer instead of allocating 16 MiB each time, which left the
    /// heap fragmented (an xDeepFM run's peak varied by 130 MiB with the length of its command
    /// line).
    fn outer_into(&self, hidden: &Tensor, x: &Tensor, scratch: Option<&Tensor>) -> Tensor {
        let Some(buf) = scratch else {
            return self.outer(hidden, x);
        };
        let (n, h, f) = (x.size()[0], hidden.size()[1], x.size()[1]);
        let out = buf.narrow(0, 0, n * h * f).view([n, h, f]);
        let _ = hidden.unsqueeze(2).mul_out(&out, &x.unsqueeze(1));
        out.view([n, h * f])
    }

    /// A flat buffer for [`Cin::outer_into`]: the widest outer product of the largest slice of
    /// `dim`-wide embeddings.
    fn scratch(&self, like: &Tensor, dim: i64) -> Tensor {
        let rows = self.samples_per_slice(dim) * dim;
        like.new_empty([rows * self.widest], (like.kind(), like.device()))
    }

    /// The gradients of [`Cin::outer`]'s inputs from that of its output `[N, H·F]`.
    fn outer_backward(&self, hidden: &Tensor, x: &Tensor, grad: &Tensor) -> (Tensor, Tensor) {
        let hidden = hidden.contiguous();
        cin_loops::outer_backward(&hidden, x, grad).unwrap_or_else(|| {
            let grad = grad.view([x.size()[0], -1, x.size()[1]]);
            (
                grad.bmm(&x.unsqueeze(2)).squeeze_dim(2),
                hidden.unsqueeze(1).bmm(&grad).squeeze_dim(1),
            )
        })
    }

    /// The maps sent to the output, `[N, width]`: every layer's second half under
    /// `split_half` (the last layer's whole output).
    fn output_maps(&self, outs: &[Tensor]) -> Vec<Tensor> {
        let last = outs.len() - 1;
        outs.iter()
            .enumerate()
            .map(|(i, out)| {
                if self.split_half && i < last {
                    let half = (self.sizes[i] / 2) as i64;
                    out.narrow(1, half, half)
                } else {
                    out.shallow_clone()
                }
            })
            .collect()
    }

    /// Sum pooling over d: `[B·d, width]` → `[B, width]`.
    fn pool(&self, outs: &[Tensor], dim: i64) -> Tensor {
        let width = Cin::output_width(&self.sizes, self.split_half) as i64;
        Tensor::cat(&self.output_maps(outs), 1)
            .view([-1, dim, width])
            .sum_dim_intlist(1, false, outs[0].kind())
    }

    /// The training forward pass with a backward pass of its own: `[B, F, d]` →
    /// [`CinTape::output`], computed outside autograd and kept with only the layers' outputs,
    /// not their outer products (`[B·d, H·F]` each, the bulk of xDeepFM's activations), which
    /// [`Cin::backward_recomputing`] recomputes slice by slice. Equal to [`Cin::forward`].
    pub fn forward_recomputing(&self, x0: &Tensor) -> CinTape {
        let dim = x0.size()[2];
        tch::no_grad(|| {
            let folded = self.first.fold(&self.layers[0].0);
            let scratch = self.scratch(x0, dim);
            let slices: Vec<CinSlice> = x0
                .split(self.samples_per_slice(dim), 0)
                .iter()
                .map(|s| {
                    let x = s.transpose(1, 2).reshape([-1, s.size()[1]]);
                    let outs = self.layer_outputs(&x, &folded, Some(&scratch));
                    CinSlice { x, outs }
                })
                .collect();
            let pooled: Vec<Tensor> = slices.iter().map(|s| self.pool(&s.outs, dim)).collect();
            CinTape {
                output: Tensor::cat(&pooled, 0).set_requires_grad(true),
                slices,
                folded,
                scratch,
                dim,
            }
        })
    }

    /// The backward pass of [`Cin::forward_recomputing`], once the loss's backward pass has given
    /// `tape.output` its gradient: adds the layers' weight and bias gradients to theirs and
    /// returns the input's gradient `[B, F, d]` (zeros if the output got none).
    pub fn backward_recomputing(&self, tape: &CinTape) -> Tensor {
        let g = tape.output.grad();
        let batch = tape.output.size()[0];
        let fields = self.first.fields;
        let kind = tape.output.kind();
        if !g.defined() {
            return Tensor::zeros([batch, fields, tape.dim], (kind, tape.output.device()));
        }
        tch::no_grad(|| {
            // per layer: the weight's (the first layer's folded onto the pairs) and the bias's
            let mut grads: Vec<(Tensor, Tensor)> = self
                .layers
                .iter()
                .enumerate()
                .map(|(i, (w, b))| {
                    let w = if i == 0 { &tape.folded } else { w };
                    (w.zeros_like(), b.zeros_like())
                })
                .collect();
            // the outer products' and their gradients' buffers, reused by every slice
            let scratch = (
                tape.scratch.shallow_clone(),
                self.scratch(&tape.scratch, tape.dim),
            );
            let mut offset = 0;
            let inputs: Vec<Tensor> = tape
                .slices
                .iter()
                .map(|s| {
                    let samples = s.x.size()[0] / tape.dim;
                    let grad = g.narrow(0, offset, samples);
                    offset += samples;
                    self.backward_slice(s, &grad, &tape.folded, &scratch, &mut grads)
                })
                .collect();
            for (i, ((w, b), (gw, gb))) in self.layers.iter().zip(&grads).enumerate() {
                let gw = if i == 0 {
                    self.first.unfold(gw)
                } else {
                    gw.shallow_clone()
                };
                add_to_grad(w, &gw);
                add_to_grad(b, gb);
            }
            Tensor::cat(&inputs, 0)
        })
    }

    /// One slice's backward pass: accumulates into `grads` and returns the gradient of its
    /// input `[b, F, d]`.
    fn backward_slice(
        &self,
        s: &CinSlice,
        grad: &Tensor,
        folded: &Tensor,
        scratch: &(Tensor, Tensor),
        grads: &mut [(Tensor, Tensor)],
    ) -> Tensor {
        let (rows, fields) = (s.x.size()[0], s.x.size()[1]);
        let samples = grad.size()[0];
        let dim = rows / samples;
        let width = grad.size()[1];
        // the sum pooling's gradient: each row (b, d) gets its sample's
        let pooled = grad
            .unsqueeze(1)
            .expand([samples, dim, width], false)
            .reshape([rows, width]);
        let mut parts = Vec::new();
        let mut offset = 0;
        for map in self.output_maps(&s.outs) {
            let w = map.size()[1];
            parts.push(pooled.narrow(1, offset, w));
            offset += w;
        }
        let mut grad_x = s.x.zeros_like();
        // the gradient of the next layer's input maps
        let mut grad_hidden: Option<Tensor> = None;
        let last = self.layers.len() - 1;
        for i in (0..self.layers.len()).rev() {
            let out = &s.outs[i];
            let grad_out = match grad_hidden.take() {
                None => parts[i].shallow_clone(),
                Some(h) if self.split_half && i < last => {
                    Tensor::cat(&[h, parts[i].shallow_clone()], 1)
                }
                Some(h) => h + &parts[i],
            };
            // ReLU's gradient, from its output
            let grad_a = out.threshold_backward(&grad_out, 0.0);
            let (gw, gb) = &mut grads[i];
            *gb += grad_a.sum_dim_intlist(0, false, grad_a.kind());
            if i == 0 {
                let z = self.first.products(&s.x);
                let _ = gw.addmm_(&grad_a.tr(), &z);
                grad_x += self.first.products_backward(&s.x, &grad_a.mm(folded));
            } else {
                let hidden = self.hidden(&s.outs, i);
                let z = self.outer_into(&hidden, &s.x, Some(&scratch.0));
                let _ = gw.addmm_(&grad_a.tr(), &z);
                let grad_z = scratch.1.narrow(0, 0, z.numel() as i64).view([rows, -1]);
                let _ = grad_a.mm_out(&grad_z, &self.layers[i].0);
                let (gh, gx) = self.outer_backward(&hidden, &s.x, &grad_z);
                grad_hidden = Some(gh);
                grad_x += gx;
            }
        }
        grad_x.view([samples, dim, fields]).transpose(1, 2)
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
