//! DARE's random pruning (PEFT's `random_pruning` with `rescale=True`): each entry is kept with
//! probability `density` and the kept ones are divided by `density`, so the tensor keeps its
//! expected value. PEFT draws its masks from torch's global RNG; soup seeds one `StdRng` stream
//! per tensor from (seed, projection and side, adapter index), so a merge is reproducible and
//! independent of the order in which projections are processed. The masks cannot equal torch's.

use rand::{Rng, SeedableRng};

/// SplitMix64's finalizer: spreads (seed, stream, index) over the seed space.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `x · Bernoulli(density) / density`, with its own seeded stream. `density >= 1` keeps all
/// and does not rescale (PEFT returns the tensor untouched).
// x: (n,) -> (n,)
pub fn prune_random(x: &[f32], density: f64, seed: u64) -> Vec<f32> {
    if density >= 1.0 {
        return x.to_vec();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = density as f32;
    x.iter()
        .map(|&v| if rng.gen_bool(density) { v / d } else { 0.0 })
        .collect()
}

/// Prunes each of `tensors` with its own stream derived from `seed`, `stream` and its index.
pub(crate) fn prune_all(tensors: &[&[f32]], density: f64, seed: u64, stream: u64) -> Vec<Vec<f32>> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| prune_random(t, density, mix(mix(seed ^ mix(stream)) ^ i as u64)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_density_and_rescales() {
        let x = vec![2.0f32; 20_000];
        let out = prune_random(&x, 0.3, 7);
        let kept = out.iter().filter(|v| **v != 0.0).count() as f64 / x.len() as f64;
        assert!((kept - 0.3).abs() < 0.02, "kept {kept}");
        assert!(out
            .iter()
            .all(|v| *v == 0.0 || (*v - 2.0 / 0.3).abs() < 1e-6));
        assert_eq!(out, prune_random(&x, 0.3, 7), "seeded");
        assert_ne!(out, prune_random(&x, 0.3, 8));
        assert_eq!(prune_random(&x, 1.0, 7), x);
    }

    #[test]
    fn streams_differ_per_tensor() {
        let x = vec![1.0f32; 256];
        let out = prune_all(&[&x, &x], 0.5, 1, 3);
        assert_ne!(out[0], out[1]);
        assert_eq!(out, prune_all(&[&x, &x], 0.5, 1, 3));
    }
}
