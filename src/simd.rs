//! Which vector instructions the CPU has, for the hand-written CPU loops (MLET's projection,
//! the fused row update). Each such loop is written once as an `#[inline(always)]` function and
//! wrapped in a `#[target_feature(enable = "avx2")]` twin that is called only where
//! `has_avx2()`; the twins do the same element-wise arithmetic without fused multiply-adds, so
//! results do not depend on the CPU.

/// Whether the CPU has AVX2 (checked once; the standard library caches the answer).
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}
