//! xDeepFM's CIN as computed (one GEMM per layer on rows `(b, d)`, the first layer on the
//! symmetric field pairs, the batch in slices) against its definition: explicit loops over
//! the formula for the output, DeepCTR-Torch's formulation (`Cin::forward_deepctr_form`)
//! for the gradients, in f64; and a traced CIN, which must take any batch size.
use tch::{nn, CModule, Device, Kind, Tensor};

use mlet::layers::Cin;

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
