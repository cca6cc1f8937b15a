//! Test inputs from a local generator: libtorch's is global, and tests running in parallel
//! draw from it, so values taken from it would depend on the order tests run in.
use tch::Tensor;

/// A stream of values uniform in `[-offset, 2 - offset)` (xorshift64).
pub struct TestValues(u64);

impl TestValues {
    pub fn new(seed: u64) -> TestValues {
        TestValues(seed)
    }

    /// A `shape` tensor of the next values.
    pub fn tensor(&mut self, shape: &[i64], offset: f32) -> Tensor {
        let n: i64 = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next(offset)).collect();
        Tensor::from_slice(&v).view(shape)
    }

    fn next(&mut self, offset: f32) -> f32 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - offset
    }
}
