//! xDeepFM's CIN as computed (one GEMM per layer on rows `(b, d)`, the first layer on the
//! symmetric field pairs, the batch in slices) against its definition: explicit loops over
//! the formula for the output, DeepCTR-Torch's formulation (`Cin::forward_deepctr_form`)
//! for the gradients, in f64; a traced CIN, which must take any batch size; and the training
//! path, whose CIN computes its own backward pass, against autograd in a whole xDeepFM.
mod common;

use tch::{nn, CModule, Device, Kind, Tensor};

use mlet::config::{EmbeddingKind, ModelConfig, XdeepfmConfig};
use mlet::layers::Cin;
use mlet::models::CtrModel;
use mlet::training::batch_tensors;

const TOL: f64 = 1e-10;

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// A CIN in f64 with non-zero biases (torch's default init draws them too).
fn cin_f64(fields: usize, sizes: &[usize], split_half: bool) -> (nn::VarStore, Cin) {
    tch::manual_seed(7);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let cin = Cin::new(&(vs.root() / "cin"), fields, sizes, split_half);
    vs.double();
    (vs, cin)
}

/// The definition, per sample and embedding coordinate: `x^{k+1}[o] = ReLU(Σ_{h,m}
/// W_k[o, h·F + m] · x^k[h] · x^0[m] + b_k[o])`; with `split_half` every layer but the last
/// keeps its first half as `x^{k+1}` and emits the second; the output is each emitted map
/// summed over the coordinates.
fn cin_definition(cin: &Cin, x0: &Tensor, sizes: &[usize], split_half: bool) -> Vec<Vec<f64>> {
    let s = x0.size();
    let (batch, fields, dim) = (s[0] as usize, s[1] as usize, s[2] as usize);
    let x = values(x0);
    let params: Vec<Vec<f64>> = cin.state_dict("").iter().map(|(_, t)| values(t)).collect();
    (0..batch)
        .map(|b| {
            let mut emitted = Vec::new();
            for c in 0..dim {
                let x0c: Vec<f64> = (0..fields).map(|m| x[(b * fields + m) * dim + c]).collect();
                let mut hidden = x0c.clone();
                let mut out_c = Vec::new();
                for (k, &size) in sizes.iter().enumerate() {
                    let (w, bias) = (&params[2 * k], &params[2 * k + 1]);
                    let cols = hidden.len() * fields;
                    let next: Vec<f64> = (0..size)
                        .map(|o| {
                            let mut acc = bias[o];
                            for (h, xh) in hidden.iter().enumerate() {
                                for (m, xm) in x0c.iter().enumerate() {
                                    acc += w[o * cols + h * fields + m] * xh * xm;
                                }
                            }
                            acc.max(0.0)
                        })
                        .collect();
                    if split_half && k + 1 < sizes.len() {
                        out_c.extend_from_slice(&next[size / 2..]);
                        hidden = next[..size / 2].to_vec();
                    } else {
                        out_c.extend_from_slice(&next);
                        hidden = next;
                    }
                }
                emitted.push(out_c);
            }
            (0..emitted[0].len())
                .map(|j| emitted.iter().map(|e| e[j]).sum())
                .collect()
        })
        .collect()
}

#[test]
fn cin_output_is_the_definition() {
    for (sizes, split_half) in [(vec![6, 4, 5], true), (vec![3, 2], false), (vec![5], true)] {
        let (_vs, cin) = cin_f64(4, &sizes, split_half);
        let x0 = Tensor::randn([5, 4, 3], (Kind::Double, Device::Cpu));
        let ours = cin.forward(&x0);
        let expected = cin_definition(&cin, &x0, &sizes, split_half);
        let width = Cin::output_width(&sizes, split_half);
        assert_eq!(ours.size(), [5, width as i64]);
        let ours = values(&ours);
        let mut nonzero = 0;
        for (b, row) in expected.iter().enumerate() {
            for (j, e) in row.iter().enumerate() {
                let o = ours[b * width + j];
                assert!(
                    (o - e).abs() <= TOL * e.abs().max(1.0),
                    "sizes {sizes:?}: sample {b} map {j}: {o} vs {e}"
                );
                nonzero += (*e != 0.0) as usize;
            }
        }
        assert!(nonzero > 0, "sizes {sizes:?}: all outputs zero");
    }
}

/// Criteo's 26 fields and the default 256-128 at d = 16: a batch of several slices.
#[test]
fn sliced_batch_and_gradients_match_deepctr_form() {
    let sizes = [256, 128];
    let (vs, cin) = cin_f64(26, &sizes, true);
    let batch = 3 * cin.rows_per_slice() / 16 + 5;
    let x0 = Tensor::randn([batch, 26, 16], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let grad = Tensor::randn([batch, 256], (Kind::Double, Device::Cpu));

    let mut inputs = vec![x0.shallow_clone()];
    inputs.extend(vs.trainable_variables());
    let backward = |forward: &dyn Fn(&Tensor) -> Tensor| {
        let y = forward(&x0);
        let loss = (&y * &grad).sum(Kind::Double);
        let mut out = vec![y.detach()];
        out.extend(Tensor::run_backward(&[loss], &inputs, false, false));
        out
    };
    let ours = backward(&|x| cin.forward(x));
    let theirs = backward(&|x| cin.forward_deepctr_form(x));
    let names = [
        "output",
        "∂x0",
        "∂parameter 0",
        "∂parameter 1",
        "∂parameter 2",
        "∂parameter 3",
    ];
    assert_eq!(ours.len(), names.len());
    for ((name, o), t) in names.iter().zip(&ours).zip(&theirs) {
        let scale = t.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{name}: all zero");
        let diff = max_abs_diff(o, t);
        assert!(
            diff <= TOL * scale,
            "{name}: max |Δ| = {diff} (scale {scale})"
        );
    }
}

/// The export traces at batch 2: the trace must serve batches that the CIN slices.
#[test]
fn traced_cin_takes_batches_it_would_slice() {
    let (mut vs, cin) = cin_f64(26, &[256, 128], true);
    vs.freeze();
    let module = tch::no_grad(|| {
        CModule::create_by_tracing(
            "Cin",
            "forward",
            &[Tensor::randn([2, 26, 16], (Kind::Double, Device::Cpu))],
            &mut |x| vec![cin.forward(&x[0])],
        )
    })
    .unwrap();
    let batch = 2 * cin.rows_per_slice() / 16 + 3;
    let x0 = Tensor::randn([batch, 26, 16], (Kind::Double, Device::Cpu));
    let traced = module.forward_ts(&[&x0]).unwrap();
    let direct = tch::no_grad(|| cin.forward(&x0));
    let diff = max_abs_diff(&traced, &direct);
    assert!(
        diff <= TOL * direct.abs().max().double_value(&[]),
        "max |Δ| = {diff}"
    );
}

/// The training path (`forward_recomputing` + `backward_recomputing`, which keeps no outer
/// products) against autograd through `forward`, in f64: output, the input's gradient and
/// every parameter's, with and without `split_half` (the second keeps every layer whole, so a
/// layer's output gradient sums what the next layer and the output send it), over several
/// slices; run twice, the second adds onto the gradients the first left.
#[test]
fn recomputing_backward_is_autograd() {
    for (sizes, split_half) in [(&[256usize, 128][..], true), (&[10, 6, 4][..], false)] {
        let (vs, cin) = cin_f64(26, sizes, split_half);
        let batch = 2 * cin.rows_per_slice() / 16 + 3;
        let width = Cin::output_width(sizes, split_half) as i64;
        let opts = (Kind::Double, Device::Cpu);
        let x0 = Tensor::randn([batch, 26, 16], opts).set_requires_grad(true);
        let grad = Tensor::randn([batch, width], opts);
        let params = vs.trainable_variables();

        let mut inputs = vec![x0.shallow_clone()];
        inputs.extend(params.iter().map(|p| p.shallow_clone()));
        let y = cin.forward(&x0);
        let loss = (&y * &grad).sum(Kind::Double);
        let theirs = Tensor::run_backward(&[loss], &inputs, false, false);

        for round in 1..=2 {
            let tape = cin.forward_recomputing(&x0.detach());
            let diff = max_abs_diff(&tape.output.detach(), &y.detach());
            assert!(
                diff <= TOL * y.abs().max().double_value(&[]),
                "output: {diff}"
            );
            (&tape.output * &grad).sum(Kind::Double).backward();
            let grad_x0 = cin.backward_recomputing(&tape);
            let mut ours = vec![grad_x0];
            ours.extend(params.iter().map(|p| p.grad() / round as f64));
            for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
                let scale = t.abs().max().double_value(&[]);
                assert!(scale > 0.0, "{sizes:?} gradient {i}: all zero");
                let diff = max_abs_diff(o, t);
                assert!(
                    diff <= TOL * scale,
                    "{sizes:?} round {round}, gradient {i}: max |Δ| = {diff} (scale {scale})"
                );
            }
        }
    }
}

/// Every trainable variable's gradient and the lookups' row gradients after
/// `CtrModel::backward` of the summed loss of one batch, `train` choosing the path: in training
/// the CINs compute their own backward pass, in evaluation mode (xDeepFM has no dropout at its
/// defaults, so the two are the same function) autograd differentiates `Cin::forward`.
fn model_gradients(model: &CtrModel, train: bool) -> Vec<(String, Tensor)> {
    let batch = common::batch(64, common::NUM_DENSE, &common::CARDS, 3);
    let (dense, labels, index) = batch_tensors(&batch, model, Device::Cpu).unwrap();
    for (_, mut v) in model.vs.variables() {
        v.zero_grad();
    }
    let forward = model.forward(&dense, &index, train);
    let loss = forward.logits.binary_cross_entropy_with_logits::<Tensor>(
        &labels,
        None,
        None,
        tch::Reduction::Sum,
    );
    model.backward(&loss, &forward.lookups);
    let mut out: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .map(|(n, v)| (n, v.grad().copy()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, l) in forward.lookups.iter().enumerate() {
        out.push((format!("rows of lookup {i}"), l.rows_grad().copy()));
    }
    out
}

#[test]
fn xdeepfm_training_gradients_are_autograds() {
    for (kind, sets) in [(EmbeddingKind::Single, 1), (EmbeddingKind::Mlet, 2)] {
        let cfg = ModelConfig::Xdeepfm(XdeepfmConfig {
            cin_layer_size: vec![8, 6],
            ..Default::default()
        });
        let mut emb = common::embedding(kind);
        emb.sets = sets;
        let model = {
            let _rng = common::rng_lock();
            tch::manual_seed(11);
            CtrModel::new(&cfg, &emb, &common::shape(), Device::Cpu).unwrap()
        };
        let ours = model_gradients(&model, true);
        let theirs = model_gradients(&model, false);
        assert_eq!(ours.len(), theirs.len());
        let mut cin_weights = 0;
        for ((name, o), (_, t)) in ours.iter().zip(&theirs) {
            let scale = t.abs().max().double_value(&[]);
            assert!(scale > 0.0, "{kind:?} x{sets}: {name}: no gradient");
            let diff = max_abs_diff(o, t);
            assert!(
                diff <= 1e-5 * scale,
                "{kind:?} x{sets}: {name}: max |Δ| = {diff} (scale {scale})"
            );
            cin_weights += name.contains("conv1ds") as usize;
        }
        assert_eq!(
            cin_weights,
            4 * sets,
            "{kind:?} x{sets}: CIN parameters compared"
        );
    }
}
