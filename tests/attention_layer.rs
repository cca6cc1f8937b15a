//! AutoInt's interacting layer as computed (reassociated: `(x A_j) xᵀ` scores, all heads in one
//! batched product) against DeepCTR-Torch's formulation (`InteractingLayer::forward_deepctr_form`):
//! output and every gradient, in f64, for 1, 2 and 4 heads with and without the residual.
use tch::{nn, Device, Kind, Tensor};

use mlet::layers::InteractingLayer;

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
