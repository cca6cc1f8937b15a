//! Contiguous f32 CPU tensors as Rust slices, and the dot product, for the hand-written loops
//! (MLET's projection, the CIN's and AutoInt's backward passes).
use tch::{Device, Kind, Tensor};

/// Whether the loops can read every tensor: contiguous f32 on the CPU.
pub(crate) fn fusable(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous())
}

/// # Safety
/// `t` must be a contiguous f32 CPU tensor that nothing writes to meanwhile.
pub(crate) unsafe fn slice(t: &Tensor) -> &[f32] {
    match t.numel() {
        0 => &[],
        n => std::slice::from_raw_parts(t.data_ptr() as *const f32, n),
    }
}

/// # Safety
/// `t` must be a contiguous f32 CPU tensor that nothing else reads or writes meanwhile.
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn slice_mut(t: &Tensor) -> &mut [f32] {
    match t.numel() {
        0 => &mut [],
        n => std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n),
    }
}

/// The first `n` values of `rest`, which keeps the others.
pub(crate) fn take<'a>(rest: &mut &'a [f32], n: usize) -> &'a [f32] {
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    head
}

/// The first `n` values of `rest`, which keeps the others.
pub(crate) fn take_mut<'a>(rest: &mut &'a mut [f32], n: usize) -> &'a mut [f32] {
    let (head, tail) = std::mem::take(rest).split_at_mut(n);
    *rest = tail;
    head
}

/// `Σ a[i]·b[i]` in eight interleaved partial sums, added in a fixed order: vectorised, and
/// the same bits on any CPU.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (a8, b8) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (ca, cb) in a8.zip(b8) {
        for l in 0..LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}
