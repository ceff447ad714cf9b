//! Causal attention without its masked half, on the CPU in f32.
//!
//! Why it exists: in a call without cached positions (a training step, a prompt's prefill)
//! each query sees only the keys up to its own position, yet the plain form computes the whole
//! (s × s) score matrix, its product with the values and, in the backward, four products over
//! it, with half of every one multiplied by probabilities that are exactly 0. PyTorch's
//! training step skips that half in its fused causal kernel. Here the queries go in blocks of
//! [`BLOCK`] positions, each block against the keys up to its last position: at s = 256 that is
//! 62.5 % of the plain work. The probabilities are kept whole (zeros after each query's
//! position), so the tape and every other consumer see the plain form's tensor.
//!
//! The layout is the decoder's grouped one: q5 (b, nkv, rep · s, d), the rep query heads of
//! one kv head stacked along the sequence axis; k and v (b, nkv, s, d). Each (batch row, kv
//! head) is one task for a thread, its products single-threaded gemm calls.
//!
//! Scores, the softmax and its backward take the plain kernels' operations in the same order
//! over the keys they keep; the columns they skip hold exact zeros there. Only the products
//! sum in a different order (over fewer keys), so results agree to rounding.

use super::fused::{softmax_backward_row, softmax_row, with_f32};
use super::products::{gemm_serial, Matrix};
use crate::error::{CoreError, Result};
use candle_core::Tensor;
use rayon::prelude::*;

/// Query positions per block: gemm's tiles stay full while the blocks follow the diagonal.
const BLOCK: usize = 64;

/// The grouped-attention shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    /// batch rows
    b: usize,
    /// kv heads
    nkv: usize,
    /// query heads per kv head
    rep: usize,
    /// positions (queries and keys alike)
    s: usize,
    /// head dim
    d: usize,
}

impl Dims {
    /// From q5 (b, nkv, rep · s, d) and k (b, nkv, s, d), checking v against k and q5 against
    /// both.
    fn of(q5: &Tensor, k: &Tensor, v: &Tensor) -> Result<Self> {
        let (b, nkv, rows, d) = q5.dims4()?;
        let (kb, knkv, s, kd) = k.dims4()?;
        if (kb, knkv, kd) != (b, nkv, d) || v.dims() != k.dims() || s == 0 || rows % s != 0 {
            return Err(CoreError::tensor(
                "causal attention",
                format!(
                    "queries {:?}, keys {:?} and values {:?} do not fit together",
                    q5.dims(),
                    k.dims(),
                    v.dims()
                ),
            ));
        }
        Ok(Dims {
            b,
            nkv,
            rep: rows / s,
            s,
            d,
        })
    }

    /// Elements of one unit's (one batch row and kv head's) queries, keys, probabilities.
    fn q_len(&self) -> usize {
        self.rep * self.s * self.d
    }
    fn k_len(&self) -> usize {
        self.s * self.d
    }
    fn p_len(&self) -> usize {
        self.rep * self.s * self.s
    }

    /// Each block of query positions, [i0, i1).
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let s = self.s;
        (0..s)
            .step_by(BLOCK)
            .map(move |i0| (i0, (i0 + BLOCK).min(s)))
    }
}

/// softmax(scale · q kᵀ + mask) and its product with v, for a mask (b or 1, 1, s, s) that masks
/// every key after its query (the decoder's mask without cached positions; padding may mask
/// more). Returns (probs (b, nkv, rep · s, s), out (b, nkv, rep · s, d)), or `None` where the
/// kernel does not apply.
pub fn causal_forward(
    q5: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Option<(Tensor, Tensor)>> {
    let dm = Dims::of(q5, k, v)?;
    let Dims { b, nkv, rep, s, d } = dm;
    let (mb, _, ms, mt) = mask.dims4()?;
    if !(mb == 1 || mb == b) || (ms, mt) != (s, s) {
        return Ok(None);
    }
    let run = |v5: &[&[f32]]| -> Result<(Vec<f32>, Vec<f32>)> {
        let (q, k, v, mask) = (v5[0], v5[1], v5[2], v5[3]);
        let mut probs = vec![0f32; b * nkv * dm.p_len()];
        let mut out = vec![0f32; b * nkv * dm.q_len()];
        let scale = scale as f32;
        probs
            .par_chunks_mut(dm.p_len())
            .zip(out.par_chunks_mut(dm.q_len()))
            .enumerate()
            .try_for_each(|(u, (probs, out))| -> Result<()> {
                let (q, k, v) = (
                    &q[u * dm.q_len()..][..dm.q_len()],
                    &k[u * dm.k_len()..][..dm.k_len()],
                    &v[u * dm.k_len()..][..dm.k_len()],
                );
                let batch = if mb == 1 { 0 } else { u / nkv };
                let mask = &mask[batch * s * s..][..s * s];
                let mut scores = vec![0f32; BLOCK * s];
                for (i0, i1) in dm.blocks() {
                    let m = i1 - i0;
                    for r in 0..rep {
                        let row0 = r * s + i0;
                        // scores (m, i1) = q[rows] (m, d) · k[..i1]ᵀ (d, i1)
                        gemm_serial(
                            &mut scores,
                            i1,
                            (m, i1, d),
                            &Matrix::new(q, row0 * d, d, 1),
                            &Matrix::new(k, 0, 1, d),
                            false,
                        )?;
                        for ii in 0..m {
                            let i = i0 + ii;
                            softmax_row(
                                &scores[ii * i1..][..i1],
                                Some(&mask[i * s..][..i1]),
                                scale,
                                &mut probs[(row0 + ii) * s..][..i1],
                            );
                        }
                        // out[rows] (m, d) = probs[rows, ..i1] (m, i1) · v[..i1] (i1, d)
                        gemm_serial(
                            &mut out[row0 * d..],
                            d,
                            (m, d, i1),
                            &Matrix::new(probs, row0 * s, s, 1),
                            &Matrix::new(v, 0, d, 1),
                            false,
                        )?;
                    }
                }
                Ok(())
            })?;
        Ok((probs, out))
    };
    // A strided view, another device or dtype: the caller takes the plain form.
    let Some((probs, out)) = with_f32(&[q5, k, v, mask], run).transpose()? else {
        return Ok(None);
    };
    let dev = q5.device();
    Ok(Some((
        Tensor::from_vec(probs, (b, nkv, rep * s, s), dev)?,
        Tensor::from_vec(out, (b, nkv, rep * s, d), dev)?,
    )))
}

/// The backward of [`causal_forward`] from its probabilities and the gradient of its output
/// g_o (b, nkv, rep · s, d): (g_q5, g_k, g_v) in the shapes of q5, k and v, or `None` where the
/// kernel does not apply. Exact for any probabilities that are 0 after each query's position.
pub fn causal_backward(
    q5: &Tensor,
    k: &Tensor,
    v: &Tensor,
    probs: &Tensor,
    g_o: &Tensor,
    scale: f64,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let dm = Dims::of(q5, k, v)?;
    let Dims { b, nkv, rep, s, d } = dm;
    if probs.dims() != [b, nkv, rep * s, s] || g_o.dims() != q5.dims() {
        return Ok(None);
    }
    let run = |v5: &[&[f32]]| -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (q, k, v, probs, g_o) = (v5[0], v5[1], v5[2], v5[3], v5[4]);
        let mut g_q = vec![0f32; b * nkv * dm.q_len()];
        let mut g_k = vec![0f32; b * nkv * dm.k_len()];
        let mut g_v = vec![0f32; b * nkv * dm.k_len()];
        let scale = scale as f32;
        g_q.par_chunks_mut(dm.q_len())
            .zip(g_k.par_chunks_mut(dm.k_len()))
            .zip(g_v.par_chunks_mut(dm.k_len()))
            .enumerate()
            .try_for_each(|(u, ((g_q, g_k), g_v))| -> Result<()> {
                let (q, g_o, k, v, probs) = (
                    &q[u * dm.q_len()..][..dm.q_len()],
                    &g_o[u * dm.q_len()..][..dm.q_len()],
                    &k[u * dm.k_len()..][..dm.k_len()],
                    &v[u * dm.k_len()..][..dm.k_len()],
                    &probs[u * dm.p_len()..][..dm.p_len()],
                );
                // The gradient of the block's probabilities, then of its scores.
                let mut g_s = vec![0f32; BLOCK * s];
                for (i0, i1) in dm.blocks() {
                    let m = i1 - i0;
                    for r in 0..rep {
                        let row0 = r * s + i0;
                        let g_o_rows = Matrix::new(g_o, row0 * d, d, 1);
                        // g_p (m, i1) = g_o[rows] (m, d) · v[..i1]ᵀ (d, i1)
                        gemm_serial(
                            &mut g_s,
                            i1,
                            (m, i1, d),
                            &g_o_rows,
                            &Matrix::new(v, 0, 1, d),
                            false,
                        )?;
                        // g_v[..i1] (i1, d) += probs[rows, ..i1]ᵀ (i1, m) · g_o[rows] (m, d)
                        let p_t = Matrix::new(probs, row0 * s, 1, s);
                        gemm_serial(g_v, d, (i1, d, m), &p_t, &g_o_rows, true)?;
                        // g_s = scale · p ⊙ (g_p − Σ g_p ⊙ p), row by row
                        for ii in 0..m {
                            let p = &probs[(row0 + ii) * s..][..i1];
                            softmax_backward_row(p, &mut g_s[ii * i1..][..i1], scale);
                        }
                        let g_s_rows = Matrix::new(&g_s, 0, i1, 1);
                        // g_q[rows] (m, d) = g_s (m, i1) · k[..i1] (i1, d)
                        let k_rows = Matrix::new(k, 0, d, 1);
                        gemm_serial(
                            &mut g_q[row0 * d..],
                            d,
                            (m, d, i1),
                            &g_s_rows,
                            &k_rows,
                            false,
                        )?;
                        // g_k[..i1] (i1, d) += g_sᵀ (i1, m) · q[rows] (m, d)
                        let g_s_t = Matrix::new(&g_s, 0, 1, i1);
                        let q_rows = Matrix::new(q, row0 * d, d, 1);
                        gemm_serial(g_k, d, (i1, d, m), &g_s_t, &q_rows, true)?;
                    }
                }
                Ok(())
            })?;
        Ok((g_q, g_k, g_v))
    };
    let Some((g_q, g_k, g_v)) = with_f32(&[q5, k, v, probs, g_o], run).transpose()? else {
        return Ok(None);
    };
    let dev = q5.device();
    Ok(Some((
        Tensor::from_vec(g_q, q5.dims(), dev)?,
        Tensor::from_vec(g_k, k.dims(), dev)?,
        Tensor::from_vec(g_v, v.dims(), dev)?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{max_abs_diff, uniform};
    use candle_core::Device;

    const MASKED: f32 = -1e30;

    /// The decoder's additive mask (b, 1, s, s): causal, and each row's keys outside
    /// [start, end) masked (left and right padding).
    fn mask(s: usize, live: &[(usize, usize)]) -> Tensor {
        let m: Vec<f32> = live
            .iter()
            .flat_map(|&(start, end)| {
                (0..s).flat_map(move |i| {
                    (0..s).map(move |j| {
                        let pad = if j < start || j >= end { MASKED } else { 0.0 };
                        pad + if j > i { MASKED } else { 0.0 }
                    })
                })
            })
            .collect();
        Tensor::from_vec(m, (live.len(), 1, s, s), &Device::Cpu).unwrap()
    }

    /// The plain form: every score, the fused softmax, every product.
    fn plain(q5: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> (Tensor, Tensor) {
        let (b, nkv, rows, _) = q5.dims4().unwrap();
        let s = k.dims()[2];
        let scores = q5
            .matmul(&k.t().unwrap())
            .unwrap()
            .reshape((b, nkv, rows / s, s, s))
            .unwrap();
        let probs =
            super::super::fused::masked_softmax(&scores, Some(&mask.unsqueeze(1).unwrap()), scale)
                .unwrap()
                .reshape((b, nkv, rows, s))
                .unwrap();
        let out = probs.matmul(v).unwrap();
        (probs, out)
    }

    /// Rows (b, kv head, row of q5) whose query sees at least one key: a left-padded
    /// position sees none, and what attention gives it is never read.
    fn live_rows(t: &Tensor, live: &[(usize, usize)], s: usize) -> Tensor {
        let (b, nkv, rows, _) = t.dims4().unwrap();
        let keep = Tensor::from_vec(
            (0..b)
                .flat_map(|bi| (0..nkv * rows).map(move |r| u8::from(r % s >= live[bi].0)))
                .collect::<Vec<u8>>(),
            (b, nkv, rows, 1),
            &Device::Cpu,
        )
        .unwrap();
        keep.broadcast_as(t.shape())
            .unwrap()
            .where_cond(t, &t.zeros_like().unwrap())
            .unwrap()
    }

    /// Blocks of 64 with a ragged last one (s = 150), grouped queries (rep 3) and one query
    /// head per kv head (rep 1), padding on either side: the output and probabilities of every
    /// row that sees a key equal the plain form's bit for bit, and the gradients match the
    /// plain backward's products.
    #[test]
    fn blocked_causal_attention_equals_the_plain_form() {
        let scale = 0.125;
        for (rep, s, live) in [
            (3, 150, vec![(0, 150), (0, 97), (40, 150)]),
            (1, 64, vec![(0, 64)]),
            (2, 7, vec![(0, 7), (2, 7)]),
        ] {
            let (b, nkv, d) = (live.len(), 2, 16);
            let q5 = uniform(&[b, nkv, rep * s, d], 1.0, 1);
            let k = uniform(&[b, nkv, s, d], 1.0, 2);
            let v = uniform(&[b, nkv, s, d], 1.0, 3);
            let g_o = uniform(&[b, nkv, rep * s, d], 1.0, 4);
            let m = mask(s, &live);
            let (want_p, want_o) = plain(&q5, &k, &v, &m, scale);
            let (p, o) = causal_forward(&q5, &k, &v, &m, scale).unwrap().unwrap();
            let live_of = |t: &Tensor| live_rows(t, &live, s);
            assert_eq!(
                max_abs_diff(&live_of(&p), &live_of(&want_p)),
                0.0,
                "rep {rep} s {s}"
            );
            assert_eq!(
                max_abs_diff(&live_of(&o), &live_of(&want_o)),
                0.0,
                "rep {rep} s {s}"
            );

            // A model never reads a left-padded query row (it sees no key), so its output
            // gradient is 0; the plain backward's products then give the reference.
            let g_o = live_of(&g_o);
            let g_p = g_o.matmul(&v.t().unwrap()).unwrap();
            let g_s = super::super::fused::softmax_backward(&want_p, &g_p, scale).unwrap();
            let (g_q, g_k, g_v) = causal_backward(&q5, &k, &v, &p, &g_o, scale)
                .unwrap()
                .unwrap();
            for (got, want) in [
                (g_q, g_s.matmul(&k).unwrap()),
                (g_k, g_s.t().unwrap().matmul(&q5).unwrap()),
                (g_v, want_p.t().unwrap().matmul(&g_o).unwrap()),
            ] {
                assert!(max_abs_diff(&got, &want) < 1e-5, "rep {rep} s {s}");
            }
        }
    }

    /// A mask that is not (b or 1, 1, s, s), or f64 operands, go to the plain form.
    #[test]
    fn other_shapes_and_dtypes_are_left_to_the_plain_form() {
        let q5 = uniform(&[1, 1, 8, 4], 1.0, 1);
        let k = uniform(&[1, 1, 8, 4], 1.0, 2);
        let wide = Tensor::zeros((1, 1, 8, 9), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(causal_forward(&q5, &k, &k, &wide, 1.0).unwrap().is_none());
        let f64 = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
        let m = f64(&mask(8, &[(0, 8)]));
        assert!(causal_forward(&f64(&q5), &f64(&k), &f64(&k), &m, 1.0)
            .unwrap()
            .is_none());
        let m = mask(8, &[(0, 8)]);
        let err = causal_forward(&q5, &k.narrow(3, 0, 3).unwrap(), &k, &m, 1.0).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }
}
