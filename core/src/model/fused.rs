//! Element-wise passes of the decoder fused into one walk over their tensors, on the CPU in f32.
//!
//! Why it exists: a training step's products run near gemm's speed, and what keeps it behind
//! PyTorch is the passes between them (timed per phase with the `profile_step` example, AMD
//! EPYC Zen 4, batch 8 × 256): the attention's scale, mask and softmax took 0.85 s of a 13 s
//! step as three candle passes, the softmax's backward five more, and SwiGLU's activation and
//! its backward eight passes over (2048 × 1536) a layer, each allocating and touching a fresh
//! tensor. Each function here reads its inputs once and writes each output once, in parallel
//! over rows; other devices and dtypes take the composite candle ops, which are the reference
//! the tests hold these to.

use crate::error::Result;
use candle_core::{CpuStorage, DType, Layout, Storage, Tensor, D};
use rayon::prelude::*;

/// expf is 0 below this (the smallest subnormal is e^-103.3): a masked score costs no exp.
const EXP_UNDERFLOW: f32 = -104.0;

/// Rows per rayon task: enough work to outweigh the hand-over.
const MIN_ROWS_PER_TASK: usize = 16;

/// The contiguous f32 elements of a CPU tensor, or `None` where the fused kernels do not apply.
fn f32_slice<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        Storage::Cpu(CpuStorage::F32(v)) => layout.contiguous_offsets().map(|(a, b)| &v[a..b]),
        _ => None,
    }
}

/// Runs `f` on the contiguous f32 slices of `ts` when every one has them.
pub(super) fn with_f32<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> Option<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let slices: Option<Vec<&[f32]>> = guards.iter().map(|(s, l)| f32_slice(s, l)).collect();
    slices.map(|s| f(&s))
}

/// softmax(scale · scores + mask) over the last axis. scores: (b, ..., s, t); mask: additive
/// and frozen, broadcastable to the scores. The kernel takes a mask of the scores' rank that
/// varies at most by batch row and query position, (b or 1, 1, ..., s or 1, t), as the decoder
/// builds it; any other goes to the composite.
/// The CPU kernel gives the composite's result bit for bit: the same operations in the same
/// order, with the exp of an underflowing score skipped (it is 0).
pub fn masked_softmax(scores: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let dims = scores.dims().to_vec();
    let t = *dims.last().unwrap_or(&1);
    let s = if dims.len() >= 2 {
        dims[dims.len() - 2]
    } else {
        1
    };
    let b = dims.first().copied().unwrap_or(1);
    let rows = scores.elem_count() / t.max(1);
    let per_batch = rows / b.max(1);
    // Where each score row finds its mask row: the mask varies by batch row (or not) and by
    // query position.
    let mask_shape = mask.map(|m| {
        let md = m.dims();
        let mb = md.first().copied().unwrap_or(1);
        let ms = if md.len() == dims.len() {
            md[md.len() - 2]
        } else {
            1
        };
        (mb, ms, m.elem_count())
    });
    let kernel_fits = dims.len() >= 2
        && t > 0
        && mask.is_none_or(|m| m.rank() == dims.len())
        && match mask_shape {
            None => true,
            Some((mb, ms, count)) => {
                (mb == 1 || mb == b) && (ms == 1 || ms == s) && count == mb * ms * t
            }
        };
    if kernel_fits {
        let run = |v: &[&[f32]]| {
            let (x, m) = (v[0], v.get(1).copied());
            let mut out = vec![0f32; x.len()];
            let scale = scale as f32;
            out.par_chunks_mut(t)
                .with_min_len(MIN_ROWS_PER_TASK)
                .enumerate()
                .for_each(|(r, o)| {
                    let xr = &x[r * t..(r + 1) * t];
                    let mr = match (m, mask_shape) {
                        (Some(m), Some((mb, ms, _))) => {
                            let batch = if mb == 1 { 0 } else { r / per_batch };
                            let pos = if ms == 1 { 0 } else { r % s };
                            Some(&m[(batch * ms + pos) * t..(batch * ms + pos + 1) * t])
                        }
                        _ => None,
                    };
                    softmax_row(xr, mr, scale, o);
                });
            out
        };
        let parts: Vec<&Tensor> = std::iter::once(scores).chain(mask).collect();
        if let Some(out) = with_f32(&parts, run) {
            return Ok(Tensor::from_vec(out, dims, scores.device())?);
        }
    }
    let z = (scores * scale)?;
    let z = match mask {
        Some(m) => z.broadcast_add(m)?,
        None => z,
    };
    Ok(candle_nn::ops::softmax_last_dim(&z)?)
}

/// One row of [`masked_softmax`], in the composite's order of operations.
pub(super) fn softmax_row(x: &[f32], mask: Option<&[f32]>, scale: f32, out: &mut [f32]) {
    match mask {
        Some(m) => {
            for ((o, &xi), &mi) in out.iter_mut().zip(x).zip(m) {
                *o = (xi * scale + 0.0) + mi;
            }
        }
        None => {
            for (o, &xi) in out.iter_mut().zip(x) {
                *o = xi * scale + 0.0;
            }
        }
    }
    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for o in out.iter_mut() {
        let z = *o - max;
        *o = if z < EXP_UNDERFLOW { 0.0 } else { z.exp() };
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// The gradient of the scores of [`masked_softmax`] from its result p and the result's
/// gradient g (both (..., t)): scale · p ⊙ (g − Σ g ⊙ p), one row at a time.
pub fn softmax_backward(p: &Tensor, g: &Tensor, scale: f64) -> Result<Tensor> {
    let t = p.dims().last().copied().unwrap_or(1);
    if p.dims() == g.dims() && t > 0 {
        let run = |v: &[&[f32]]| {
            let (p, g) = (v[0], v[1]);
            let mut out = vec![0f32; p.len()];
            let scale = scale as f32;
            out.par_chunks_mut(t)
                .with_min_len(MIN_ROWS_PER_TASK)
                .enumerate()
                .for_each(|(r, o)| {
                    o.copy_from_slice(&g[r * t..(r + 1) * t]);
                    softmax_backward_row(&p[r * t..(r + 1) * t], o, scale);
                });
            out
        };
        if let Some(out) = with_f32(&[p, g], run) {
            return Ok(Tensor::from_vec(out, p.dims(), p.device())?);
        }
    }
    let gp = (g * p)?;
    let dot = gp.sum_keepdim(D::Minus1)?;
    Ok(((gp - p.broadcast_mul(&dot)?)? * scale)?)
}

/// One row of [`softmax_backward`], in place: g, the result's gradient, becomes the scores'
/// gradient scale · p ⊙ (g − Σ g ⊙ p).
pub(super) fn softmax_backward_row(p: &[f32], g: &mut [f32], scale: f32) {
    let dot: f32 = p.iter().zip(g.iter()).map(|(p, g)| p * g).sum();
    for (g, &p) in g.iter_mut().zip(p) {
        *g = scale * p * (*g - dot);
    }
}

/// SwiGLU's activation silu(gate) ⊙ up, gate and up of one shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() == up.dims() {
        let run = |v: &[&[f32]]| {
            let (gate, up) = (v[0], v[1]);
            let mut out = vec![0f32; gate.len()];
            par_zip(&mut out, |i, o| {
                for ((o, &a), &u) in o.iter_mut().zip(&gate[i..]).zip(&up[i..]) {
                    *o = a / (1.0 + (-a).exp()) * u;
                }
            });
            out
        };
        if let Some(out) = with_f32(&[gate, up], run) {
            return Ok(Tensor::from_vec(out, gate.dims(), gate.device())?);
        }
    }
    Ok((gate.silu()? * up)?)
}

/// The gradients of gate and up in [`swiglu`] given the activation's gradient g:
/// g ⊙ up ⊙ silu'(gate) and g ⊙ silu(gate), with silu'(x) = σ(x) (1 + x (1 − σ(x))).
pub fn swiglu_backward(gate: &Tensor, up: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    if gate.dims() == up.dims() && gate.dims() == g.dims() {
        let run = |v: &[&[f32]]| {
            let (gate, up, g) = (v[0], v[1], v[2]);
            let mut g_gate = vec![0f32; gate.len()];
            let mut g_up = vec![0f32; gate.len()];
            g_gate
                .par_chunks_mut(CHUNK)
                .zip(g_up.par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, (gg, gu))| {
                    let i = c * CHUNK;
                    for (j, (gg, gu)) in gg.iter_mut().zip(gu.iter_mut()).enumerate() {
                        let (a, u, g) = (gate[i + j], up[i + j], g[i + j]);
                        let sig = 1.0 / (1.0 + (-a).exp());
                        *gu = g * a * sig;
                        *gg = g * u * sig * (1.0 + a * (1.0 - sig));
                    }
                });
            (g_gate, g_up)
        };
        if let Some((gg, gu)) = with_f32(&[gate, up, g], run) {
            let dev = gate.device();
            return Ok((
                Tensor::from_vec(gg, gate.dims(), dev)?,
                Tensor::from_vec(gu, gate.dims(), dev)?,
            ));
        }
    }
    let sig = candle_nn::ops::sigmoid(gate)?;
    let silu = (gate * &sig)?;
    let dsilu = ((gate * sig.affine(-1.0, 1.0)?)? + 1.0)?.mul(&sig)?;
    Ok((((g * up)? * dsilu)?, (g * silu)?))
}

/// The gradient of x in rms_norm(x) · w over the last axis, given the result's gradient g, plus
/// `residual` (the gradient reaching x around the norm, of x's shape): with u = g ⊙ w and
/// r = 1/√(mean x² + eps), r · (u − x · r² · mean(u ⊙ x)), computed in f32.
pub fn rms_norm_backward(
    x: &Tensor,
    w: &Tensor,
    eps: f64,
    g: &Tensor,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let h = x.dims().last().copied().unwrap_or(1);
    let shapes_fit = h > 0
        && g.dims() == x.dims()
        && w.dims() == [h]
        && residual.is_none_or(|r| r.dims() == x.dims());
    if shapes_fit {
        let run = |v: &[&[f32]]| {
            let (x, w, g, res) = (v[0], v[1], v[2], v.get(3).copied());
            let mut out = vec![0f32; x.len()];
            let eps = eps as f32;
            out.par_chunks_mut(h)
                .with_min_len(MIN_ROWS_PER_TASK)
                .enumerate()
                .for_each(|(i, o)| {
                    let (xr, gr) = (&x[i * h..(i + 1) * h], &g[i * h..(i + 1) * h]);
                    let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
                    let r = 1.0 / (ms + eps).sqrt();
                    let m = xr
                        .iter()
                        .zip(gr)
                        .zip(w)
                        .map(|((x, g), w)| g * w * x)
                        .sum::<f32>()
                        / h as f32;
                    let k = m * r * r;
                    for (j, o) in o.iter_mut().enumerate() {
                        *o = r * (gr[j] * w[j] - xr[j] * k);
                    }
                    if let Some(res) = res {
                        for (o, r) in o.iter_mut().zip(&res[i * h..(i + 1) * h]) {
                            *o += r;
                        }
                    }
                });
            out
        };
        let parts: Vec<&Tensor> = [x, w, g].into_iter().chain(residual).collect();
        if let Some(out) = with_f32(&parts, run) {
            return Ok(Tensor::from_vec(out, x.dims(), x.device())?);
        }
    }
    let dt = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let u = g
        .to_dtype(DType::F32)?
        .broadcast_mul(&w.to_dtype(DType::F32)?)?;
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    let m = (&u * &x)?.mean_keepdim(D::Minus1)?;
    let dx = (u - x.broadcast_mul(&(m * r.sqr()?)?)?)?
        .broadcast_mul(&r)?
        .to_dtype(dt)?;
    Ok(match residual {
        Some(res) => (res + dx)?,
        None => dx,
    })
}

/// Each row's cross-entropy of logits x (n, vocab) against labels (n) u32, and `grad_scale`
/// times its gradient with respect to the logits, softmax(x) − one-hot: (n), (n, vocab). The
/// CPU kernel walks each row three times while it is in cache (max; exp and sum; scale).
pub fn cross_entropy_with_grad(
    x: &Tensor,
    labels: &Tensor,
    grad_scale: f64,
) -> Result<(Tensor, Tensor)> {
    let (n, vocab) = x.dims2()?;
    if let Some(labels_v) = kernel_labels(x, labels)? {
        let run = |v: &[&[f32]]| {
            let x = v[0];
            let mut grad = vec![0f32; x.len()];
            let mut nll = vec![0f32; n];
            let scale = grad_scale as f32;
            grad.par_chunks_mut(vocab)
                .zip(nll.par_iter_mut())
                .enumerate()
                .for_each(|(r, (g, nll))| {
                    let xr = &x[r * vocab..(r + 1) * vocab];
                    let label = labels_v[r] as usize;
                    let (max, sum) = max_and_exp_sum(xr, |i, e| g[i] = e);
                    *nll = sum.ln() + max - xr[label];
                    let k = scale / sum;
                    for g in g.iter_mut() {
                        *g *= k;
                    }
                    g[label] -= scale;
                });
            (nll, grad)
        };
        if let Some((nll, grad)) = with_f32(&[x], run) {
            return Ok((
                Tensor::from_vec(nll, n, x.device())?,
                Tensor::from_vec(grad, (n, vocab), x.device())?,
            ));
        }
    }
    let labels = labels.unsqueeze(1)?;
    let (e, sum, nll) = composite_cross_entropy(x, &labels)?;
    let p = e.broadcast_div(&sum)?;
    let minus_one = Tensor::full(-1f32, labels.dims(), x.device())?.to_dtype(p.dtype())?;
    p.scatter_add_set(&labels, &minus_one, 1)?;
    Ok((nll, (p * grad_scale)?))
}

/// Each row's cross-entropy of logits x (n, vocab) against labels (n) u32: (n). Scoring
/// needs no gradient, so the CPU kernel allocates nothing of the logits' size (the composite
/// form, as `log_softmax` does, makes several copies of them).
pub fn cross_entropy(x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (n, vocab) = x.dims2()?;
    if let Some(labels_v) = kernel_labels(x, labels)? {
        let run = |v: &[&[f32]]| {
            let x = v[0];
            let mut nll = vec![0f32; n];
            nll.par_iter_mut().enumerate().for_each(|(r, nll)| {
                let xr = &x[r * vocab..(r + 1) * vocab];
                let (max, sum) = max_and_exp_sum(xr, |_, _| {});
                *nll = sum.ln() + max - xr[labels_v[r] as usize];
            });
            nll
        };
        if let Some(nll) = with_f32(&[x], run) {
            return Ok(Tensor::from_vec(nll, n, x.device())?);
        }
    }
    Ok(composite_cross_entropy(x, &labels.unsqueeze(1)?)?.2)
}

/// The labels as a vector when the CPU kernels take `x` and `labels` ((n, vocab) logits, (n)
/// u32 labels on the CPU); an error names a label beyond the vocabulary.
fn kernel_labels(x: &Tensor, labels: &Tensor) -> Result<Option<Vec<u32>>> {
    let (n, vocab) = x.dims2()?;
    let fits = vocab > 0 && labels.dims() == [n] && labels.dtype() == DType::U32;
    if !fits || !labels.device().is_cpu() {
        return Ok(None);
    }
    let labels_v = labels.to_vec1::<u32>()?;
    if let Some(&bad) = labels_v.iter().find(|&&l| l as usize >= vocab) {
        return Err(crate::error::CoreError::tensor(
            "labels",
            format!("hold token {bad}, beyond the vocabulary of {vocab}"),
        ));
    }
    Ok(Some(labels_v))
}

/// A row's maximum and Σ exp(x − max), handing each exp to `each(i, e)` on the way.
fn max_and_exp_sum(xr: &[f32], mut each: impl FnMut(usize, f32)) -> (f32, f32) {
    let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (i, &v) in xr.iter().enumerate() {
        let e = (v - max).exp();
        each(i, e);
        sum += e;
    }
    (max, sum)
}

/// The composite cross-entropy of x (n, vocab) against labels (n, 1): exp(x − max), its row
/// sums and the rows' cross-entropy (n).
fn composite_cross_entropy(x: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    let nll = ((sum.log()? + max)? - x.gather(labels, 1)?)?.squeeze(1)?;
    Ok((e, sum, nll))
}

/// Elements per rayon task of the element-wise kernels.
const CHUNK: usize = 1 << 14;

/// Runs `f(start, chunk)` over `out` in parallel chunks.
fn par_zip(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, o)| f(c * CHUNK, o));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::{Device, IndexOp};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        crate::test_support::uniform(shape, 4.0, seed)
    }

    /// A causal mask with padded keys, as the decoder builds it: (b, 1, 1, s, t).
    fn causal_mask(b: usize, s: usize, t: usize) -> Tensor {
        let past = t - s;
        let v: Vec<f32> = (0..b)
            .flat_map(|r| {
                (0..s).flat_map(move |i| {
                    (0..t).map(move |j| {
                        if j > past + i || (r == 1 && j == 0) {
                            -1e30
                        } else {
                            0.0
                        }
                    })
                })
            })
            .collect();
        Tensor::from_vec(v, (b, 1, 1, s, t), &Device::Cpu).unwrap()
    }

    fn composite(x: &Tensor, m: Option<&Tensor>, scale: f64) -> Tensor {
        let z = (x * scale).unwrap();
        let z = match m {
            Some(m) => z.broadcast_add(m).unwrap(),
            None => z,
        };
        candle_nn::ops::softmax_last_dim(&z).unwrap()
    }

    #[test]
    fn the_fused_softmax_is_the_composite_bit_for_bit_under_every_mask_shape() {
        let x = randn(&[2, 3, 2, 5, 7], 1);
        let per_row = causal_mask(2, 5, 7);
        let shared = per_row.i(0..1).unwrap();
        let keys_only = randn(&[2, 1, 1, 1, 7], 2);
        for m in [None, Some(&per_row), Some(&shared), Some(&keys_only)] {
            let got = masked_softmax(&x, m, 0.125).unwrap();
            let want = composite(&x, m, 0.125);
            assert_eq!(
                max_abs_diff(&got, &want),
                0.0,
                "mask {:?}",
                m.map(|m| m.dims())
            );
        }
        // A layout the kernel does not take (a mask over heads) still gets the right answer.
        let by_head = randn(&[1, 3, 1, 5, 7], 3);
        let got = masked_softmax(&x, Some(&by_head), 0.5).unwrap();
        assert_eq!(max_abs_diff(&got, &composite(&x, Some(&by_head), 0.5)), 0.0);
    }

    #[test]
    fn the_fused_cross_entropy_matches_its_composite_form() {
        let x = randn(&[5, 300], 13);
        let labels = Tensor::new(&[0u32, 299, 7, 7, 150], &Device::Cpu).unwrap();
        let (nll, g) = cross_entropy_with_grad(&x, &labels, 0.25).unwrap();
        let f64s = x.to_dtype(DType::F64).unwrap();
        let (want_nll, want_g) = cross_entropy_with_grad(&f64s, &labels, 0.25).unwrap();
        let f32s = |t: Tensor| t.to_dtype(DType::F32).unwrap();
        assert!(max_abs_diff(&nll, &f32s(want_nll)) < 1e-4);
        assert!(max_abs_diff(&g, &f32s(want_g)) < 1e-6);
        // Without the gradient: the same values, from the kernel and from the composite.
        assert_eq!(
            max_abs_diff(&cross_entropy(&x, &labels).unwrap(), &nll),
            0.0
        );
        let composite = cross_entropy(&f64s, &labels).unwrap();
        assert!(max_abs_diff(&nll, &f32s(composite)) < 1e-4);
        let beyond = Tensor::new(&[0u32, 300, 0, 0, 0], &Device::Cpu).unwrap();
        for err in [
            cross_entropy_with_grad(&x, &beyond, 1.0).unwrap_err(),
            cross_entropy(&x, &beyond).unwrap_err(),
        ] {
            assert!(err.to_string().contains("300"), "{err}");
        }
    }

    #[test]
    fn the_fused_backwards_match_the_composite_forms() {
        let p = masked_softmax(&randn(&[2, 3, 5, 7], 4), None, 1.0).unwrap();
        let g = randn(&[2, 3, 5, 7], 5);
        let gp = (&g * &p).unwrap();
        let dot = gp.sum_keepdim(D::Minus1).unwrap();
        let want = ((gp - p.broadcast_mul(&dot).unwrap()).unwrap() * 0.3).unwrap();
        assert!(max_abs_diff(&softmax_backward(&p, &g, 0.3).unwrap(), &want) < 1e-6);

        // rms_norm's backward with a residual, against the composite on f64 (the fallback).
        let (x, w, g, res) = (
            randn(&[3, 4, 24], 9),
            randn(&[24], 10),
            randn(&[3, 4, 24], 11),
            randn(&[3, 4, 24], 12),
        );
        let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let want = rms_norm_backward(&f64s(&x), &f64s(&w), 1e-5, &f64s(&g), Some(&f64s(&res)))
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let got = rms_norm_backward(&x, &w, 1e-5, &g, Some(&res)).unwrap();
        assert!(
            max_abs_diff(&got, &want) < 1e-4,
            "{}",
            max_abs_diff(&got, &want)
        );

        let (gate, up, g) = (
            randn(&[40_000], 6),
            randn(&[40_000], 7),
            randn(&[40_000], 8),
        );
        let act = swiglu(&gate, &up).unwrap();
        assert!(max_abs_diff(&act, &(gate.silu().unwrap() * &up).unwrap()) < 1e-5);
        // Against finite differences of the activation, element by element.
        let (g_gate, g_up) = swiglu_backward(&gate, &up, &g).unwrap();
        let h = 1e-2f64;
        let shifted = |t: &Tensor, d: f64| (t + d).unwrap();
        let fd_gate = ((swiglu(&shifted(&gate, h), &up).unwrap()
            - swiglu(&shifted(&gate, -h), &up).unwrap())
        .unwrap()
            * (1.0 / (2.0 * h)))
            .unwrap()
            .mul(&g)
            .unwrap();
        let fd_up = ((swiglu(&gate, &shifted(&up, h)).unwrap()
            - swiglu(&gate, &shifted(&up, -h)).unwrap())
        .unwrap()
            * (1.0 / (2.0 * h)))
            .unwrap()
            .mul(&g)
            .unwrap();
        assert!(
            max_abs_diff(&g_gate, &fd_gate) < 2e-2,
            "{}",
            max_abs_diff(&g_gate, &fd_gate)
        );
        assert!(
            max_abs_diff(&g_up, &fd_up) < 2e-2,
            "{}",
            max_abs_diff(&g_up, &fd_up)
        );
    }
}
