//! TIES's sign election and disjoint merge (PEFT's `calculate_majority_sign_mask` and
//! `disjoint_merge`). The election runs on the pruned, *unweighted* tensors (a negative weight
//! does not flip a vote); the merge is a mean over the adapters that agree with the elected sign,
//! of their weighted values. Pruned zeros have sign 0 and never agree.

use super::MajoritySign;

/// `Σ_i w_i P_i [sign P_i = M] / max(#agree, 1)` with `M = +1` where the vote is `>= 0`.
// pruned: k × (n,), weights: (k,) -> (n,)
pub fn elect_and_merge(pruned: &[&[f32]], weights: &[f32], method: MajoritySign) -> Vec<f32> {
    let n = pruned.first().map(|t| t.len()).unwrap_or(0);
    let sign = |x: f32| -> f32 {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let mut out = vec![0f32; n];
    for (j, o) in out.iter_mut().enumerate() {
        let vote: f32 = match method {
            MajoritySign::Total => pruned.iter().map(|t| t[j]).sum(),
            MajoritySign::Frequency => pruned.iter().map(|t| sign(t[j])).sum(),
        };
        let majority = if vote >= 0.0 { 1.0 } else { -1.0 };
        let mut sum = 0f32;
        let mut count = 0f32;
        for (t, &w) in pruned.iter().zip(weights) {
            if sign(t[j]) == majority {
                sum += t[j] * w;
                count += 1.0;
            }
        }
        *o = sum / count.max(1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_agreeing_entries_with_unweighted_vote() {
        let a = [1.0f32, 2.0, -1.0, 0.0];
        let b = [3.0f32, -5.0, -1.0, 0.0];
        let out = elect_and_merge(&[&a, &b], &[1.0, 0.5], MajoritySign::Total);
        // 0: both +, mean (1 + 1.5)/2; 1: vote -3 -> only b (-2.5); 2: both -, (-1 - 0.5)/2;
        // 3: nobody agrees -> 0.
        assert_eq!(out, vec![1.25, -2.5, -0.75, 0.0]);
        let out = elect_and_merge(&[&a, &b], &[1.0, 0.5], MajoritySign::Frequency);
        // 1: one vote each -> tie elects + -> only a (2.0).
        assert_eq!(out, vec![1.25, 2.0, -0.75, 0.0]);
    }

    #[test]
    fn equal_signs_at_density_one_is_the_weighted_mean() {
        let a = [1.0f32, -2.0];
        let b = [3.0f32, -4.0];
        let out = elect_and_merge(&[&a, &b], &[1.0, 1.0], MajoritySign::Total);
        assert_eq!(out, vec![2.0, -3.0]);
    }
}
