//! Gradients computed outside autograd (MLET's projections, the CIN's recomputing backward),
//! handed to a leaf as `backward()` would have.
use tch::Tensor;

/// Adds `g` to the gradient of the leaf `x`: in place where `x` already has one, otherwise
/// through autograd from the surrogate `Σ x·g`, whose gradient is exactly `g` (tch cannot set a
/// gradient directly).
pub(crate) fn add_to_grad(x: &Tensor, g: &Tensor) {
    let mut existing = x.grad();
    if existing.defined() {
        tch::no_grad(|| existing += g);
    } else {
        // also from inside `no_grad`
        tch::with_grad(|| (x * g.detach()).sum(x.kind()).backward());
    }
}
