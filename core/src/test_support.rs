//! Helpers shared by the tests: the crate's unit tests, and (through the `test-support` feature)
//! the tests of the binary and of the end-to-end crate, so that each exists once.

use candle_core::Tensor;

/// The largest absolute difference between two tensors of the same shape, as f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A CPU f32 tensor of `shape` with elements drawn uniformly from [-bound, bound), the same for
/// the same seed.
pub fn uniform(shape: &[usize], bound: f32, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-bound..bound)).collect();
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap()
}
