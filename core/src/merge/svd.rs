//! The SVD family of merges (PEFT's `_svd_generalized_task_arithmetic_weighted_adapter`):
//! combine the full deltas `Δ_i = s_i B_i A_i` with the weights as given (no square roots),
//! take `U, S, Vh = svd(Δ)`, and keep `B = U[:, :k] diag(S[:k])`, `A = Vh[:k]` (k = svd_rank):
//! the best rank-k approximation of the combined delta (Eckart–Young).
//!
//! candle has no SVD, so this file carries a small deterministic one in f64: Householder QR and
//! one-sided (Hestenes) Jacobi. For plain `svd` the combined delta is a product of thin factors,
//! `Δ = [c_1 B_1 | c_2 B_2 | ...] [A_1; A_2; ...]` (rank R = Σ r_i), so it is decomposed
//! exactly through two thin QRs and an R×R SVD without forming the (out, in) matrix. The pruned
//! variants (`ties_svd`, `dare_*_svd`, `magnitude_prune_svd`) produce full-rank deltas and take
//! a dense Jacobi SVD: O(out·in·min(out,in)) per sweep, fine for small models, slow on big ones.
//!
//! Singular vectors are unique only up to a sign per pair, so B and A may differ from torch's
//! column by column; `B A`, the singular values (column norms of B) and the orthonormal rows of
//! A match. With `svd_clamp` the quantile is taken over signed entries, so clamped results can
//! differ from torch's where torch's signs differ.

use super::{device_tensor, host, unit_pair, Combine, Participants};
use crate::error::{CoreError, Result};
use crate::lora::adapter::{LoraPair, Module};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// A thin singular value decomposition `M = U diag(s) Vᵀ` with p = min(rows, cols) triplets,
/// singular values in decreasing order.
#[derive(Debug, Clone)]
pub struct Svd {
    /// U: p columns of length `rows`.
    pub u: Vec<Vec<f64>>,
    pub s: Vec<f64>,
    /// V: p columns of length `cols`.
    pub v: Vec<Vec<f64>>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One-sided Jacobi on the columns of a tall matrix (rows >= cols): rotates column pairs until
/// they are mutually orthogonal; their norms are then the singular values.
// cols: n columns of length m (m >= n) -> (U: n × (m,), s: (n,), V: n × (n,))
fn jacobi_tall(mut w: Vec<Vec<f64>>) -> Svd {
    let n = w.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    let tol = 1e-15;
    for _sweep in 0..80 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha = dot(&w[p], &w[p]);
                let beta = dot(&w[q], &w[q]);
                let gamma = dot(&w[p], &w[q]);
                if gamma == 0.0 || gamma.abs() <= tol * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                let (lo, hi) = w.split_at_mut(q);
                for (xp, xq) in lo[p].iter_mut().zip(hi[0].iter_mut()) {
                    let (a, b) = (*xp, *xq);
                    *xp = c * a - s * b;
                    *xq = s * a + c * b;
                }
                let (lo, hi) = v.split_at_mut(q);
                for (xp, xq) in lo[p].iter_mut().zip(hi[0].iter_mut()) {
                    let (a, b) = (*xp, *xq);
                    *xp = c * a - s * b;
                    *xq = s * a + c * b;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut triplets: Vec<(f64, Vec<f64>, Vec<f64>)> = w
        .into_iter()
        .zip(v)
        .map(|(col, vcol)| {
            let norm = dot(&col, &col).sqrt();
            let u = if norm > 0.0 {
                col.iter().map(|x| x / norm).collect()
            } else {
                vec![0.0; col.len()]
            };
            (norm, u, vcol)
        })
        .collect();
    triplets.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = Svd {
        u: Vec::with_capacity(n),
        s: Vec::with_capacity(n),
        v: Vec::with_capacity(n),
    };
    for (s, u, v) in triplets {
        out.s.push(s);
        out.u.push(u);
        out.v.push(v);
    }
    out
}

/// The thin SVD of a row-major (rows, cols) matrix. Deterministic; f64 throughout.
pub fn svd(m: &[f64], rows: usize, cols: usize) -> Svd {
    assert_eq!(m.len(), rows * cols, "svd: matrix size");
    if rows >= cols {
        let w = (0..cols)
            .map(|j| (0..rows).map(|i| m[i * cols + j]).collect())
            .collect();
        jacobi_tall(w)
    } else {
        // Mᵀ = U' S V'ᵀ  =>  M = V' S U'ᵀ
        let w = (0..rows)
            .map(|i| m[i * cols..(i + 1) * cols].to_vec())
            .collect();
        let t = jacobi_tall(w);
        Svd {
            u: t.v,
            s: t.s,
            v: t.u,
        }
    }
}

/// Thin Householder QR of a tall matrix given by its columns: `M = Q R`, Q (m, n) with
/// orthonormal columns even when M is rank-deficient, R (n, n) upper triangular (row-major).
// cols: n × (m,), m >= n -> (Q: n × (m,), R: (n, n))
pub fn qr_thin(mut cols: Vec<Vec<f64>>) -> (Vec<Vec<f64>>, Vec<f64>) {
    let n = cols.len();
    let m = cols.first().map(|c| c.len()).unwrap_or(0);
    assert!(m >= n, "qr_thin: needs a tall matrix");
    let mut reflectors: Vec<Option<Vec<f64>>> = Vec::with_capacity(n);
    for k in 0..n {
        let x = &cols[k][k..];
        let norm = dot(x, x).sqrt();
        if norm == 0.0 {
            reflectors.push(None);
            continue;
        }
        let alpha = if x[0] >= 0.0 { -norm } else { norm };
        let mut v = x.to_vec();
        v[0] -= alpha;
        let vn = dot(&v, &v).sqrt();
        if vn == 0.0 {
            reflectors.push(None);
            continue;
        }
        v.iter_mut().for_each(|e| *e /= vn);
        for col in cols.iter_mut().skip(k) {
            let d = 2.0 * dot(&v, &col[k..]);
            for (c, vi) in col[k..].iter_mut().zip(&v) {
                *c -= d * vi;
            }
        }
        reflectors.push(Some(v));
    }
    let mut r = vec![0.0; n * n];
    for (j, col) in cols.iter().enumerate() {
        for i in 0..=j {
            r[i * n + j] = col[i];
        }
    }
    // Q = H_0 H_1 ... H_{n-1} [I_n; 0]
    let mut q: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..m).map(|i| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for k in (0..n).rev() {
        if let Some(v) = &reflectors[k] {
            for col in q.iter_mut() {
                let d = 2.0 * dot(v, &col[k..]);
                for (c, vi) in col[k..].iter_mut().zip(v) {
                    *c -= d * vi;
                }
            }
        }
    }
    (q, r)
}

/// The SVD of `Δ = B A` from its thin factors without forming Δ: `B = Q_b R_b`,
/// `Aᵀ = Q_a R_a`, `Δ = Q_b (R_b R_aᵀ) Q_aᵀ`, and the SVD of the small core.
// b_cols: R × (out,), a_rows: R × (in,), R <= min(out, in) -> R triplets
pub fn svd_of_product(b_cols: Vec<Vec<f64>>, a_rows: Vec<Vec<f64>>) -> Svd {
    let r = b_cols.len();
    let (qb, rb) = qr_thin(b_cols);
    let (qa, ra) = qr_thin(a_rows);
    // core K = R_b R_aᵀ: (R, R)
    let mut k = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            k[i * r + j] = (0..r).map(|l| rb[i * r + l] * ra[j * r + l]).sum();
        }
    }
    let core = svd(&k, r, r);
    let lift = |basis: &[Vec<f64>], small: &[Vec<f64>]| -> Vec<Vec<f64>> {
        small
            .iter()
            .map(|coef| {
                let len = basis.first().map(|b| b.len()).unwrap_or(0);
                let mut out = vec![0.0; len];
                for (b, &c) in basis.iter().zip(coef) {
                    for (o, x) in out.iter_mut().zip(b) {
                        *o += c * x;
                    }
                }
                out
            })
            .collect()
    };
    Svd {
        u: lift(&qb, &core.u),
        s: core.s,
        v: lift(&qa, &core.v),
    }
}

/// `a (m, k) @ b (k, n)` for row-major f64 matrices, through candle's CPU matmul.
fn matmul(a: &[f64], m: usize, k: usize, b: &[f64], n: usize) -> Result<Vec<f64>> {
    let dev = candle_core::Device::Cpu;
    let a = candle_core::Tensor::from_slice(a, (m, k), &dev)?;
    let b = candle_core::Tensor::from_slice(b, (k, n), &dev)?;
    Ok(a.matmul(&b)?.flatten_all()?.to_vec1::<f64>()?)
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; a.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

/// Columns of a row-major (rows, cols) matrix, and back.
fn to_cols(a: &[f64], rows: usize, cols: usize) -> Vec<Vec<f64>> {
    (0..cols)
        .map(|j| (0..rows).map(|i| a[i * cols + j]).collect())
        .collect()
}

fn from_cols(c: &[Vec<f64>]) -> Vec<f64> {
    let rows = c.first().map(|x| x.len()).unwrap_or(0);
    let mut a = vec![0.0; rows * c.len()];
    for (j, col) in c.iter().enumerate() {
        for (i, x) in col.iter().enumerate() {
            a[i * c.len() + j] = *x;
        }
    }
    a
}

/// The top `k` singular triplets of a dense row-major (rows, cols) matrix. Small matrices take
/// the exact Jacobi SVD; larger ones a seeded block subspace iteration with Rayleigh–Ritz on
/// the Gram matrix of the smaller side (`MᵀM`, n = min(rows, cols)), stopped when the top `k`
/// Ritz pairs' residuals fall below 1e-12 of the largest eigenvalue (or after 3000 rounds, where
/// σ_k ≈ σ_{k+1} leaves the truncation itself ill-defined). `U S = M V` is then formed directly,
/// so `U S Vᵀ = M V Vᵀ` is the projection of M on the found subspace.
pub fn svd_top_k(m: &[f64], rows: usize, cols: usize, k: usize) -> Result<Svd> {
    let n = rows.min(cols);
    let block = (2 * k + 8).min(n);
    if n <= 96 || block == n {
        let mut d = svd(m, rows, cols);
        d.u.truncate(k);
        d.s.truncate(k);
        d.v.truncate(k);
        return Ok(d);
    }
    // Work with the wide side as columns: x (n, big) row-major so G = x xᵀ is (n, n).
    let wide = rows <= cols;
    let x = if wide {
        m.to_vec()
    } else {
        transpose(m, rows, cols)
    };
    let big = rows.max(cols);
    let g = matmul(&x, n, big, &transpose(&x, n, big), n)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let start: Vec<f64> = (0..n * block).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let (mut q, _) = qr_thin(to_cols(&start, n, block));
    let mut ritz: Vec<Vec<f64>> = Vec::new();
    for round in 0..3000 {
        let y = matmul(&g, n, n, &from_cols(&q), block)?; // (n, block)
        let check = round % 4 == 3;
        if check {
            // Rayleigh–Ritz: T = Qᵀ G Q (block, block), symmetric PSD.
            let t = matmul(&transpose(&from_cols(&q), n, block), block, n, &y, block)?;
            let e = svd(&t, block, block);
            let qm = from_cols(&q);
            let xr = matmul(&qm, n, block, &from_cols(&e.v), block)?; // Ritz vectors (n, block)
            let yr = matmul(&y, n, block, &from_cols(&e.v), block)?; // G X
            let top = e.s[0].max(f64::MIN_POSITIVE);
            let converged = (0..k).all(|j| {
                let res: f64 = (0..n)
                    .map(|i| (yr[i * block + j] - e.s[j] * xr[i * block + j]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                res <= 1e-12 * top
            });
            ritz = to_cols(&xr, n, block);
            if converged {
                break;
            }
            q = qr_thin(to_cols(&yr, n, block)).0;
        } else {
            q = qr_thin(to_cols(&y, n, block)).0;
        }
    }
    if ritz.is_empty() {
        ritz = q;
    }
    ritz.truncate(k);
    // Singular vectors of the small side: ritz; the other side: xᵀ v / σ.
    let xt_v = matmul(&transpose(&x, n, big), big, n, &from_cols(&ritz), k)?; // (big, k)
    let other = to_cols(&xt_v, big, k);
    let mut out = Svd {
        u: Vec::with_capacity(k),
        s: Vec::with_capacity(k),
        v: Vec::with_capacity(k),
    };
    let mut triplets: Vec<(f64, Vec<f64>, Vec<f64>)> = ritz
        .into_iter()
        .zip(other)
        .map(|(small, o)| {
            let s = dot(&o, &o).sqrt();
            let o = if s > 0.0 {
                o.iter().map(|x| x / s).collect()
            } else {
                o
            };
            (s, small, o)
        })
        .collect();
    triplets.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (s, small, o) in triplets {
        // wide: M = x, small side = rows (U), other = cols (V); tall: the reverse.
        let (u, v) = if wide { (small, o) } else { (o, small) };
        out.s.push(s);
        out.u.push(u);
        out.v.push(v);
    }
    Ok(out)
}

/// torch.quantile with linear interpolation.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (pos - lo as f64) * (v[hi] - v[lo])
}

/// B = U[:, :k] diag(S[:k]) (row-major (out, k)) and A = V[:, :k]ᵀ (row-major (k, in)); triplets
/// beyond those available are zero. Optional clamp at the `q` quantile of both, as PEFT.
fn truncate(
    d: &Svd,
    out_f: usize,
    in_f: usize,
    k: usize,
    clamp: Option<f64>,
) -> (Vec<f32>, Vec<f32>) {
    let mut b = vec![0f64; out_f * k];
    let mut a = vec![0f64; k * in_f];
    for j in 0..k.min(d.s.len()) {
        for i in 0..out_f {
            b[i * k + j] = d.u[j][i] * d.s[j];
        }
        a[j * in_f..(j + 1) * in_f].copy_from_slice(&d.v[j]);
    }
    if let Some(q) = clamp {
        let all: Vec<f64> = b.iter().chain(a.iter()).copied().collect();
        let hi = quantile(&all, q);
        let lo = -hi;
        for x in b.iter_mut().chain(a.iter_mut()) {
            *x = x.max(lo).min(hi);
        }
    }
    (
        b.into_iter().map(|x| x as f32).collect(),
        a.into_iter().map(|x| x as f32).collect(),
    )
}

/// Merges every projection with the SVD family.
pub(crate) fn svd_pairs(
    combine: &Combine,
    groups: &BTreeMap<(usize, Module), Participants<'_>>,
    new_rank: usize,
    clamp: Option<f64>,
) -> Result<BTreeMap<(usize, Module), LoraPair>> {
    let mut pairs = BTreeMap::new();
    for (&(layer, module), parts) in groups {
        let (_, first, _) = parts[0];
        let (_, in_f) = first.a.dims2()?;
        let (out_f, _) = first.b.dims2()?;
        if new_rank > out_f.min(in_f) {
            return Err(CoreError::bad_setting(
                "svd rank",
                new_rank,
                format!(
                    "larger than layer {layer} {} allows ({out_f}x{in_f}): choose at most {}",
                    module.hf_name(),
                    out_f.min(in_f)
                ),
            ));
        }
        let total_rank: usize = parts.iter().map(|(_, p, _)| p.rank()).sum();
        let d = if *combine == Combine::Linear && total_rank <= out_f.min(in_f) {
            // Δ = Σ c_i B_i A_i = [c_1 B_1 | ...] [A_1; ...]
            let mut b_cols = Vec::with_capacity(total_rank);
            let mut a_rows = Vec::with_capacity(total_rank);
            for (_, p, w) in parts {
                let c = w * p.scale;
                let r = p.rank();
                let b = host(&p.b)?;
                let a = host(&p.a)?;
                for j in 0..r {
                    b_cols.push((0..out_f).map(|i| b[i * r + j] as f64 * c).collect());
                    a_rows.push(
                        a[j * in_f..(j + 1) * in_f]
                            .iter()
                            .map(|&x| x as f64)
                            .collect(),
                    );
                }
            }
            svd_of_product(b_cols, a_rows)
        } else {
            // PEFT's get_delta_weight (f32, scaling included), then the combination.
            let deltas = parts
                .iter()
                .map(|(_, p, _)| host(&p.delta()?))
                .collect::<Result<Vec<_>>>()?;
            let weights: Vec<f32> = parts.iter().map(|(_, _, w)| *w as f32).collect();
            let stream = super::linear::stream_id(layer, module, false);
            let delta = combine.apply(&super::as_slices(&deltas), &weights, stream)?;
            let delta: Vec<f64> = delta.into_iter().map(f64::from).collect();
            svd_top_k(&delta, out_f, in_f, new_rank)?
        };
        let (b, a) = truncate(&d, out_f, in_f, new_rank, clamp);
        let device = first.a.device();
        let a = device_tensor(a, (new_rank, in_f), device)?;
        let b = device_tensor(b, (out_f, new_rank), device)?;
        pairs.insert((layer, module), unit_pair(a, b));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    fn reconstruct(d: &Svd, rows: usize, cols: usize, k: usize) -> Vec<f64> {
        let mut m = vec![0.0; rows * cols];
        for j in 0..k.min(d.s.len()) {
            for i in 0..rows {
                for c in 0..cols {
                    m[i * cols + c] += d.u[j][i] * d.s[j] * d.v[j][c];
                }
            }
        }
        m
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    fn check_orthonormal(cols: &[Vec<f64>], skip_zero: bool) {
        for i in 0..cols.len() {
            for j in 0..cols.len() {
                let d = dot(&cols[i], &cols[j]);
                if skip_zero && (dot(&cols[i], &cols[i]) == 0.0 || dot(&cols[j], &cols[j]) == 0.0) {
                    continue;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-10, "({i},{j}) {d}");
            }
        }
    }

    #[test]
    fn reconstructs_tall_and_wide_matrices() {
        for &(rows, cols) in &[(7, 4), (4, 7), (5, 5), (1, 3), (12, 1)] {
            let m = random(rows, cols, (rows * 31 + cols) as u64);
            let d = svd(&m, rows, cols);
            assert_eq!(d.s.len(), rows.min(cols));
            assert!(d.s.windows(2).all(|w| w[0] >= w[1]));
            assert!(max_diff(&reconstruct(&d, rows, cols, d.s.len()), &m) < 1e-12);
            check_orthonormal(&d.u, false);
            check_orthonormal(&d.v, false);
        }
    }

    #[test]
    fn known_singular_values() {
        // diag(3, -5, 0) padded: singular values 5, 3, 0.
        let m = [3.0, 0.0, 0.0, 0.0, -5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let d = svd(&m, 4, 3);
        assert!(max_diff(&d.s, &[5.0, 3.0, 0.0]) < 1e-14);
    }

    #[test]
    fn truncation_is_the_best_rank_k_approximation() {
        // Eckart–Young: ‖M − M_k‖_F² = Σ_{j>k} σ_j², and no other rank-k product does better;
        // check against a perturbed competitor too.
        let (rows, cols, k) = (9, 6, 2);
        let m = random(rows, cols, 3);
        let d = svd(&m, rows, cols);
        let mk = reconstruct(&d, rows, cols, k);
        let err: f64 = m.iter().zip(&mk).map(|(a, b)| (a - b).powi(2)).sum();
        let tail: f64 = d.s[k..].iter().map(|s| s * s).sum();
        assert!((err - tail).abs() < 1e-10);
        let mut worse = d.clone();
        worse.v[0][0] += 1e-3;
        let mw = reconstruct(&worse, rows, cols, k);
        let err_w: f64 = m.iter().zip(&mw).map(|(a, b)| (a - b).powi(2)).sum();
        assert!(err_w > err);
    }

    #[test]
    fn qr_of_rank_deficient_matrix() {
        let mut cols = vec![random(6, 1, 1), random(6, 1, 2)];
        cols.push(cols[0].iter().map(|x| 2.0 * x).collect()); // dependent
        cols.push(vec![0.0; 6]); // zero
        let (q, r) = qr_thin(cols.clone());
        check_orthonormal(&q, false);
        for (j, col) in cols.iter().enumerate() {
            let back: Vec<f64> = (0..6)
                .map(|i| (0..4).map(|l| q[l][i] * r[l * 4 + j]).sum())
                .collect();
            assert!(max_diff(&back, col) < 1e-12);
        }
    }

    #[test]
    fn product_svd_equals_dense_svd() {
        let (out_f, in_f, r) = (10, 8, 4);
        let b = random(out_f, r, 5);
        let a = random(r, in_f, 6);
        let mut m = vec![0.0; out_f * in_f];
        for i in 0..out_f {
            for c in 0..in_f {
                m[i * in_f + c] = (0..r).map(|l| b[i * r + l] * a[l * in_f + c]).sum();
            }
        }
        let b_cols = (0..r)
            .map(|l| (0..out_f).map(|i| b[i * r + l]).collect())
            .collect();
        let a_rows = (0..r)
            .map(|l| a[l * in_f..(l + 1) * in_f].to_vec())
            .collect();
        let p = svd_of_product(b_cols, a_rows);
        let d = svd(&m, out_f, in_f);
        assert!(max_diff(&p.s, &d.s[..r]) < 1e-12);
        for k in 1..=r {
            let x = reconstruct(&p, out_f, in_f, k);
            let y = reconstruct(&d, out_f, in_f, k);
            assert!(max_diff(&x, &y) < 1e-10, "rank {k}");
        }
    }

    #[test]
    fn top_k_by_subspace_iteration_matches_jacobi() {
        // low rank plus full-rank noise, like a pruned delta; both orientations
        for &(rows, cols) in &[(150, 120), (120, 150)] {
            let (r, k) = (10, 6);
            let b = random(rows, r, 11);
            let a = random(r, cols, 12);
            let noise = random(rows, cols, 13);
            let mut m = vec![0.0; rows * cols];
            for i in 0..rows {
                for c in 0..cols {
                    let low: f64 = (0..r).map(|l| b[i * r + l] * a[l * cols + c]).sum();
                    m[i * cols + c] = low + 0.3 * noise[i * cols + c];
                }
            }
            let exact = svd(&m, rows, cols);
            let fast = svd_top_k(&m, rows, cols, k).unwrap();
            assert_eq!(fast.s.len(), k);
            assert!(max_diff(&fast.s, &exact.s[..k]) < 1e-8);
            let x = reconstruct(&fast, rows, cols, k);
            let y = reconstruct(&exact, rows, cols, k);
            assert!(
                max_diff(&x, &y) < 1e-8,
                "{rows}x{cols}: {}",
                max_diff(&x, &y)
            );
            check_orthonormal(&fast.u, false);
            check_orthonormal(&fast.v, false);
        }
    }

    #[test]
    fn quantile_interpolates_like_torch() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 1.0), 4.0);
        assert!((quantile(&[0.0, 10.0], 0.99) - 9.9).abs() < 1e-12);
    }
}
