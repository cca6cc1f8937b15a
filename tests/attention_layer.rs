//! AutoInt's interacting layer as computed (reassociated: `(x A_j) xᵀ` scores, all heads in one
//! batched product) against DeepCTR-Torch's formulation (`InteractingLayer::forward_deepctr_form`):
//! output and every gradient, in f64, for 1, 2 and 4 heads with and without the residual.
use tch::{nn, Device, Kind, Tensor};

use mlet::layers::{AttentionTape, InteractingLayer};

const TOL: f64 = 1e-10;

#[test]
fn output_and_gradients_match_deepctr_form() {
    for (heads, residual) in [(1, true), (2, true), (2, false), (4, true)] {
        tch::manual_seed(3);
        let mut vs = nn::VarStore::new(Device::Cpu);
        // two stacked layers, so that the first one's input gradient flows through the second
        let layers: Vec<InteractingLayer> = (0..2)
            .map(|i| InteractingLayer::new(&(vs.root() / i), 16, heads, residual))
            .collect();
        vs.double();
        // weights 10x DeepCTR's init, so that the scores are far from uniform
        tch::no_grad(|| {
            for mut w in vs.trainable_variables() {
                w *= 10.0;
            }
        });
        let x = Tensor::randn([5, 26, 16], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let grad = Tensor::randn([5, 26, 16], (Kind::Double, Device::Cpu));
        let mut inputs = vec![x.shallow_clone()];
        inputs.extend(vs.trainable_variables());
        let run = |forward: &dyn Fn(&InteractingLayer, &Tensor) -> Tensor| {
            let y = layers
                .iter()
                .fold(x.shallow_clone(), |h, layer| forward(layer, &h));
            let loss = (&y * &grad).sum(Kind::Double);
            let mut out = vec![y.detach()];
            out.extend(Tensor::run_backward(&[loss], &inputs, false, false));
            out
        };
        let ours = run(&|l, x| l.forward(x));
        let theirs = run(&|l, x| l.forward_deepctr_form(x));
        assert_eq!(ours.len(), 2 + 2 * (3 + residual as usize));
        for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(o.size(), t.size());
            let scale = t.abs().max().double_value(&[]);
            assert!(scale > 0.0, "heads {heads}, tensor {i}: all zero");
            let diff = (o - t).abs().max().double_value(&[]);
            assert!(
                diff <= TOL * scale,
                "heads {heads}, residual {residual}, tensor {i} (0: output, 1: ∂x, then ∂W): \
                 max |Δ| = {diff} (scale {scale})"
            );
        }
    }
}

/// The training path (`AttentionTape::record` + `backward`, loops outside autograd) against
/// autograd through `InteractingLayer::forward`: the output, the input's gradient and every
/// weight's, for several heads, with and without the residual, field counts that do and do not
/// fill whole lanes, and three stacked layers. Both run in f32, so each is compared with the
/// same computation in f64: the loops' error must be of the order of libtorch's own (at most 4x
/// it; the two were within 0.3-3.6x of each other over these tensors, a wrong formula is off
/// by the tensor's own size). The 10x weights make the stack ill-conditioned: relative errors
/// up to 5e-4 in f32 for both.
#[test]
fn training_path_matches_autograd() {
    for (fields, dim, heads, residual) in [
        (26, 16, 2, true),
        (26, 16, 1, false),
        (5, 8, 4, true),
        (13, 32, 2, false),
        (39, 16, 4, true),
    ] {
        tch::manual_seed(7);
        let build = |vs: &nn::VarStore| -> Vec<InteractingLayer> {
            (0..3)
                .map(|i| InteractingLayer::new(&(vs.root() / i), dim, heads, residual))
                .collect()
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let layers = build(&vs);
        // weights 10x DeepCTR's init, so that the scores are far from uniform
        tch::no_grad(|| {
            for mut w in vs.trainable_variables() {
                w *= 10.0;
            }
        });
        // the same layers in f64
        let mut vs64 = nn::VarStore::new(Device::Cpu);
        let layers64 = build(&vs64);
        vs64.copy(&vs).unwrap();
        vs64.double();
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([9, fields as i64, dim as i64], opts);
        let grad = Tensor::randn([9, fields as i64, dim as i64], opts);
        let grads = |vs: &nn::VarStore| -> Vec<Tensor> {
            let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named
                .into_iter()
                .map(|(_, w)| {
                    let g = w.grad().to_kind(Kind::Double).copy();
                    let _ = w.grad().zero_();
                    g
                })
                .collect()
        };
        let autograd = |vs: &nn::VarStore, layers: &[InteractingLayer], kind: Kind| {
            let leaf = x.to_kind(kind).detach().set_requires_grad(true);
            let y = layers
                .iter()
                .fold(leaf.shallow_clone(), |h, layer| layer.forward(&h));
            (&y * grad.to_kind(kind)).sum(kind).backward();
            let mut out = vec![
                y.detach().to_kind(Kind::Double),
                leaf.grad().to_kind(Kind::Double),
            ];
            out.extend(grads(vs));
            out
        };

        let tape = AttentionTape::record(&layers, &x).expect("f32 on the CPU");
        (&tape.output * &grad).sum(Kind::Float).backward();
        let grad_x = tape.backward(&layers);
        let mut ours = vec![
            tape.output.detach().to_kind(Kind::Double),
            grad_x.to_kind(Kind::Double),
        ];
        ours.extend(grads(&vs));
        let theirs = autograd(&vs, &layers, Kind::Float);
        let exact = autograd(&vs64, &layers64, Kind::Double);

        assert_eq!(ours.len(), 2 + 3 * (3 + residual as usize));
        for (i, ((o, t), e)) in ours.iter().zip(&theirs).zip(&exact).enumerate() {
            assert_eq!(o.size(), e.size());
            let scale = e.abs().max().double_value(&[]);
            assert!(scale > 0.0, "tensor {i}: all zero");
            let error = |a: &Tensor| (a - e).abs().max().double_value(&[]) / scale;
            let (ours, libtorch) = (error(o), error(t));
            assert!(
                ours <= 4.0 * libtorch.max(1e-5),
                "fields {fields}, dim {dim}, heads {heads}, residual {residual}, tensor {i} \
                 (0: output, 1: ∂x, then ∂W): relative error {ours:e}, libtorch's {libtorch:e}"
            );
        }
    }
}

/// An output that got no gradient gives zeros for the input and leaves the weights alone.
#[test]
fn training_path_without_a_gradient_gives_zeros() {
    let vs = nn::VarStore::new(Device::Cpu);
    let layers = [InteractingLayer::new(&vs.root(), 16, 2, true)];
    let x = Tensor::randn([4, 26, 16], (Kind::Float, Device::Cpu));
    let tape = AttentionTape::record(&layers, &x).unwrap();
    let grad_x = tape.backward(&layers);
    assert_eq!(grad_x.size(), [4, 26, 16]);
    assert_eq!(grad_x.abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert!(vs.trainable_variables().iter().all(|w| !w.grad().defined()));
}

/// Where the loops do not run (not f32, or a head width `d/heads` that is not a power of two
/// up to 64) the tape is refused: the caller trains through autograd.
#[test]
fn training_path_is_refused_where_the_loops_do_not_run() {
    let vs = nn::VarStore::new(Device::Cpu);
    let layers = [InteractingLayer::new(&(vs.root() / "a"), 16, 2, true)];
    let x = Tensor::randn([4, 26, 16], (Kind::Double, Device::Cpu));
    assert!(AttentionTape::record(&layers, &x).is_none());
    let layers = [InteractingLayer::new(&(vs.root() / "b"), 12, 4, true)];
    let x = Tensor::randn([4, 26, 12], (Kind::Float, Device::Cpu));
    assert!(AttentionTape::record(&layers, &x).is_none());
    let layers = [InteractingLayer::new(&(vs.root() / "c"), 12, 3, true)];
    assert!(AttentionTape::record(&layers, &x).is_some());
}
