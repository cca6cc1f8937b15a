//! Which vector instructions the CPU has, for the hand-written CPU loops (MLET's projection,
//! the fused row update). Each such loop is a `Kernel` whose `run` is `#[inline(always)]`;
//! `dispatch` runs it compiled for AVX2 where the CPU has it (8 floats a vector instead of
//! SSE's 4) and as is elsewhere. The loops do the same element-wise arithmetic either way,
//! without fused multiply-adds, so results do not depend on the CPU.

/// A loop over slices, written once and compiled twice by `dispatch`. Implementations mark
/// `run` `#[inline(always)]`, so that it is compiled into the AVX2 caller (a body that is not
/// inlined there keeps the baseline instructions).
pub trait Kernel {
    fn run(self);
}

/// Runs `kernel`, compiled for AVX2 where the CPU has it.
pub fn dispatch<K: Kernel>(kernel: K) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[target_feature(enable = "avx2")]
        unsafe fn with_avx2<K: Kernel>(kernel: K) {
            kernel.run()
        }
        // SAFETY: the CPU was just found to have AVX2
        return unsafe { with_avx2(kernel) };
    }
    kernel.run()
}

/// Whether the CPU has AVX2 (the standard library caches the answer).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}
