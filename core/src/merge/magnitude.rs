//! Magnitude pruning (PEFT's `magnitude_based_pruning`): keep the `k = floor(density · n)`
//! largest-|x| entries of a whole tensor (flattened, not per row), zero the rest. Used alone
//! (`magnitude_prune`: prune each adapter, then the weighted sum) and as TIES's first step.

/// The tensor with all but its `floor(density · n)` largest-magnitude entries zeroed.
/// `density >= 1` keeps everything (PEFT warns and returns the tensor). Among equal
/// magnitudes at the cut, lower indices are kept (torch's choice there is unspecified).
// x: (n,) -> (n,)
pub fn prune_magnitude(x: &[f32], density: f64) -> Vec<f32> {
    if density >= 1.0 {
        return x.to_vec();
    }
    let n = x.len();
    let k = ((density * n as f64).floor() as usize).min(n);
    if k == 0 {
        return vec![0.0; n];
    }
    let mut idx: Vec<u32> = (0..n as u32).collect();
    // Largest |x| first; ties by index so the result is deterministic.
    let order = |&i: &u32, &j: &u32| {
        x[j as usize]
            .abs()
            .total_cmp(&x[i as usize].abs())
            .then(i.cmp(&j))
    };
    if k < n {
        idx.select_nth_unstable_by(k - 1, order);
    }
    let mut out = vec![0f32; n];
    for &i in &idx[..k] {
        out[i as usize] = x[i as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_largest_magnitudes_over_the_whole_tensor() {
        let x = [0.1f32, -3.0, 2.0, -0.5, 0.0, 1.0];
        assert_eq!(
            prune_magnitude(&x, 0.5),
            vec![0.0, -3.0, 2.0, 0.0, 0.0, 1.0]
        );
        // floor(0.4 · 6) = 2
        assert_eq!(
            prune_magnitude(&x, 0.4),
            vec![0.0, -3.0, 2.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(prune_magnitude(&x, 1.0), x.to_vec());
        assert_eq!(prune_magnitude(&x, 0.0), vec![0.0; 6]);
    }
}
