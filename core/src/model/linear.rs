//! The frozen projections' product on the CPU, y = x Wᵀ with x (m, k) in f32 and W (n, k) in
//! f32 or bf16, for the few rows of a generation step.
//!
//! Why it exists: a decoding step multiplies one row (or one per sequence of the batch) by every
//! weight of the model, so its speed is how fast the weights stream from memory. gemm's kernels
//! are built for many rows: for a 16-row step they pack every weight before multiplying it
//! (`perf` of an evaluation: gemm's packing and blocking loops took more samples than its
//! micro-kernels), and candle has no CPU product for bf16 at all. This one reads each weight
//! row once for all the step's rows, straight from the model's layout, and from half the bytes
//! when the weights are bf16 (widened to f32 in registers: a shift, exact). Measured on
//! SmolLM2-135M, f32, batch 16 (`soup bench --only gen`, AMD EPYC Zen 4, 2 cores): 92 new
//! tokens/s through gemm, 123 through this kernel. Many rows (a prompt's prefill, training) go
//! to candle's matmul, with bf16 weights widened to f32 first.
//!
//! The inner loop is written three times (AVX-512 and AVX2+FMA intrinsics, and plain Rust; a
//! plain-Rust loop over lane arrays was tried first and compiled to scalar code, 7x slower than
//! gemm) and the widest the running CPU supports is chosen at run time, so the default build
//! runs on any x86-64 CPU. The vector kernels take a tile of x rows and 4 weight rows at once,
//! so each load feeds several multiply-adds.

use crate::error::{CoreError, Result};
use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};
use half::bf16;
use rayon::prelude::*;

/// Up to this many rows of x, [`matmul_t`] runs the streaming kernel; above, candle's gemm.
/// Measured on SmolLM2-135M's shapes (`soup bench --only gen`): at 16 rows the kernel still
/// reads each weight once while gemm packs it; an evaluation decoding 32 rows at a time
/// through it was faster than 16 (`soup eval`, 5 of 5 interleaved pairs, identical outputs).
pub const STREAM_MAX_ROWS: usize = 32;

/// x: (m, k) → (m, n) = x Wᵀ for a frozen weight w: (n, k). The activations' dtype is kept;
/// a bf16 weight beside f32 activations is what `--dtype bf16` on the CPU loads.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, _) = x.dims2()?;
    let streamable = x.device().is_cpu()
        && x.dtype() == DType::F32
        && matches!(w.dtype(), DType::BF16 | DType::F32)
        && m <= STREAM_MAX_ROWS;
    if streamable {
        return Ok(x.apply_op2_no_bwd(w, &StreamMatmulT)?);
    }
    Ok(x.matmul(&w.to_dtype(x.dtype())?.t()?)?)
}

/// A frozen weight's element as the kernels read it: f32 as it is, bf16 widened to f32 (bf16
/// is the top half of an f32: widening is a shift, exact).
trait Weight: Copy + Send + Sync {
    fn widen(self) -> f32;

    /// 16 elements from `p` as f32 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and `p` points at 16 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;

    /// 8 elements from `p` as f32 lanes.
    ///
    /// # Safety
    /// The CPU has AVX2, and `p` points at 8 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Weight for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl Weight for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const bf16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let wi = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(wi), 16))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let wi = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(wi), 16))
    }
}

/// Weight rows dotted at once against each row of x (each x row is loaded once for all of
/// them).
const ROWS: usize = 4;

/// Rows of x a vector kernel takes at once (each weight vector is loaded once for all of
/// them): ROWS × X_TILE accumulators, 16 of AVX-512's 32 registers, 8 of AVX2's 16.
const X_TILE_AVX512: usize = 4;
const X_TILE_AVX2: usize = 2;

/// The products of XR rows of x with ROWS weight rows: out[i][r] = x[i] · w[r].
type Tile<const XR: usize> = [[f32; ROWS]; XR];

/// A kernel: XR rows of x (k each) against ROWS weight rows (k each).
type TileKernel<W, const XR: usize> = unsafe fn([&[f32]; XR], [&[W]; ROWS]) -> Tile<XR>;

/// The lanes past the last full vector, one at a time.
fn tail<W: Weight>(x: &[f32], w: &[W], from: usize) -> f32 {
    x[from..]
        .iter()
        .zip(&w[from..])
        .map(|(a, b)| a * b.widen())
        .sum()
}

/// The kernel of CPUs without AVX2, one lane at a time.
fn tile_scalar<W: Weight, const XR: usize>(x: [&[f32]; XR], w: [&[W]; ROWS]) -> Tile<XR> {
    let mut out = [[0f32; ROWS]; XR];
    for i in 0..XR {
        for r in 0..ROWS {
            out[i][r] = tail(x[i], w[r], 0);
        }
    }
    out
}

/// The same with AVX-512: 16 lanes per instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<W: Weight, const XR: usize>(x: [&[f32]; XR], w: [&[W]; ROWS]) -> Tile<XR> {
    use std::arch::x86_64::*;
    let k = x[0].len();
    let full = k / 16 * 16;
    let mut acc = [[_mm512_setzero_ps(); ROWS]; XR];
    let mut wv = [_mm512_setzero_ps(); ROWS];
    let mut c = 0;
    while c < full {
        // SAFETY: c + 16 <= k, and every row has k elements (checked by the caller).
        for r in 0..ROWS {
            wv[r] = W::load16(w[r].as_ptr().add(c));
        }
        for i in 0..XR {
            let xv = _mm512_loadu_ps(x[i].as_ptr().add(c));
            for r in 0..ROWS {
                acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
            }
        }
        c += 16;
    }
    let mut out = [[0f32; ROWS]; XR];
    for i in 0..XR {
        for r in 0..ROWS {
            out[i][r] = _mm512_reduce_add_ps(acc[i][r]) + tail(x[i], w[r], full);
        }
    }
    out
}

/// The same with AVX2 and FMA: 8 lanes per instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<W: Weight, const XR: usize>(x: [&[f32]; XR], w: [&[W]; ROWS]) -> Tile<XR> {
    use std::arch::x86_64::*;
    let k = x[0].len();
    let full = k / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); ROWS]; XR];
    let mut wv = [_mm256_setzero_ps(); ROWS];
    let mut c = 0;
    while c < full {
        // SAFETY: c + 8 <= k, and every row has k elements (checked by the caller).
        for r in 0..ROWS {
            wv[r] = W::load8(w[r].as_ptr().add(c));
        }
        for i in 0..XR {
            let xv = _mm256_loadu_ps(x[i].as_ptr().add(c));
            for r in 0..ROWS {
                acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
            }
        }
        c += 8;
    }
    let mut out = [[0f32; ROWS]; XR];
    let mut lanes = [0f32; 8];
    for i in 0..XR {
        for r in 0..ROWS {
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[i][r]);
            out[i][r] = lanes.iter().sum::<f32>() + tail(x[i], w[r], full);
        }
    }
    out
}

/// The widest kernel the running CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Baseline,
}

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// `tile` over the rows of x (m rows of k, row-major) X_TILE at a time, the last few one at a
/// time; `put(i, r, v)` receives x[i] · w[r].
fn tile_rows<W: Weight, const XR: usize>(
    x: &[f32],
    m: usize,
    k: usize,
    w: [&[W]; ROWS],
    tile: TileKernel<W, XR>,
    one: TileKernel<W, 1>,
    put: &mut impl FnMut(usize, usize, f32),
) {
    let row = |i: usize| &x[i * k..(i + 1) * k];
    let mut i = 0;
    while i + XR <= m {
        // SAFETY: `dot_rows` passes kernels the CPU has; every row has k elements.
        let t = unsafe { tile(std::array::from_fn(|a| row(i + a)), w) };
        for (a, vals) in t.iter().enumerate() {
            for (r, v) in vals.iter().enumerate() {
                put(i + a, r, *v);
            }
        }
        i += XR;
    }
    while i < m {
        // SAFETY: as above.
        let t = unsafe { one([row(i)], w) };
        for (r, v) in t[0].iter().enumerate() {
            put(i, r, *v);
        }
        i += 1;
    }
}

/// Every row of x dotted with ROWS weight rows, on the kernel `isa`.
fn dot_rows<W: Weight>(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: [&[W]; ROWS],
    put: &mut impl FnMut(usize, usize, f32),
) {
    debug_assert!(w.iter().all(|r| r.len() == k) && x.len() == m * k);
    match isa {
        // `isa()` chose these only where the CPU reports the features they enable.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => tile_rows::<W, X_TILE_AVX512>(
            x,
            m,
            k,
            w,
            tile_avx512::<W, X_TILE_AVX512>,
            tile_avx512::<W, 1>,
            put,
        ),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => tile_rows::<W, X_TILE_AVX2>(
            x,
            m,
            k,
            w,
            tile_avx2::<W, X_TILE_AVX2>,
            tile_avx2::<W, 1>,
            put,
        ),
        Isa::Baseline => {
            tile_rows::<W, 1>(x, m, k, w, tile_scalar::<W, 1>, tile_scalar::<W, 1>, put)
        }
    }
}

/// One block of weight rows for every row of x: `dst` is the block's part of yᵀ,
/// (rows of the block) × m.
fn block<W: Weight>(isa: Isa, x: &[f32], m: usize, k: usize, w: &[W], dst: &mut [f32]) {
    let n = w.len() / k;
    let row = |j: usize| &w[j.min(n - 1) * k..(j.min(n - 1) + 1) * k];
    let mut j = 0;
    while j < n {
        // A last group of fewer than ROWS rows repeats the block's last row and drops it.
        let rows: [&[W]; ROWS] = std::array::from_fn(|r| row(j + r));
        dot_rows(isa, x, m, k, rows, &mut |i, r, v| {
            if j + r < n {
                dst[(j + r) * m + i] = v;
            }
        });
        j += ROWS;
    }
}

/// y (m, n) = x (m, k) Wᵀ, W (n, k) row-major; both contiguous.
fn stream<W: Weight>(x: &[f32], m: usize, k: usize, w: &[W], isa: Isa) -> Vec<f32> {
    let n = w.len() / k;
    // Blocks of weight rows small enough that both cores get many (the load balances) and
    // large enough that a block's bookkeeping is noise: 64 rows of 576 bf16 are 72 KB.
    let rows_per_block = 64;
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(rows_per_block * m)
        .zip(w.par_chunks(rows_per_block * k))
        .for_each(|(dst, wb)| block(isa, x, m, k, wb, dst));
    if m == 1 {
        return yt;
    }
    // yt is (n, m): transpose to (m, n).
    let mut y = vec![0f32; m * n];
    for (j, col) in yt.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            y[i * n + j] = *v;
        }
    }
    y
}

/// candle's entry point for [`stream`]: x (m, k) f32, w (n, k) f32 or bf16.
struct StreamMatmulT;

impl candle_core::CustomOp2 for StreamMatmulT {
    fn name(&self) -> &'static str {
        "stream-matmul-t"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, kw) = wl.shape().dims2()?;
        if k != kw {
            candle_core::bail!("stream-matmul-t: x is (_, {k}) but the weight is (_, {kw})");
        }
        let x = contiguous(xs.as_slice::<f32>()?, xl, "x")?;
        let isa = isa();
        let y = match ws {
            CpuStorage::BF16(w) => stream(x, m, k, contiguous(w, wl, "weight")?, isa),
            CpuStorage::F32(w) => stream(x, m, k, contiguous(w, wl, "weight")?, isa),
            _ => candle_core::bail!("stream-matmul-t: the weight must be f32 or bf16"),
        };
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }
}

fn contiguous<'a, T>(s: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("stream-matmul-t: {what} is not contiguous"),
    }
}

/// A weight in bf16 beside f32 activations: what `--dtype bf16` keeps on the CPU, where candle
/// has no bf16 product. Refuses a weight that bf16 cannot hold (beyond its range).
pub fn to_frozen_bf16(w: &Tensor) -> Result<Tensor> {
    let t = w.to_dtype(DType::BF16)?;
    let bad = super::finite::non_finite(&t)?;
    if !bad.is_clean() {
        return Err(CoreError::tensor(
            "frozen weight",
            format!(
                "does not fit in bf16 ({} after rounding): use --dtype f32",
                bad.describe()
            ),
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::Device;

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        crate::test_support::uniform(&[shape.0, shape.1], 1.0, seed)
    }

    /// Row counts with and without a tile tail, widths with and without a lane tail, weight-row
    /// counts with and without a 4-row tail, f32 and bf16 weights, on every kernel the CPU
    /// running the test has: the product equals candle's on the same (widened) weight.
    #[test]
    fn streaming_product_equals_candles_matmul_on_every_kernel() {
        let kernels: Vec<Isa> = [
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2,
            Isa::Baseline,
        ]
        .into_iter()
        .filter(|k| match k {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => isa() == Isa::Avx512,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => matches!(isa(), Isa::Avx512 | Isa::Avx2),
            Isa::Baseline => true,
        })
        .collect();
        for (m, n, k) in [
            (1, 7, 5),
            (1, 130, 64),
            (3, 66, 37),
            (7, 9, 48),
            (16, 257, 80),
            (2, 4, 16),
        ] {
            let x = random((m, k), 1);
            let w = random((n, k), 2);
            let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for dt in [DType::F32, DType::BF16] {
                let w = w.to_dtype(dt).unwrap();
                let want = x
                    .matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
                    .unwrap();
                for &kern in &kernels {
                    let y = match dt {
                        DType::F32 => stream(
                            &xv,
                            m,
                            k,
                            &w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                            kern,
                        ),
                        _ => stream(
                            &xv,
                            m,
                            k,
                            &w.flatten_all().unwrap().to_vec1::<bf16>().unwrap(),
                            kern,
                        ),
                    };
                    let got = Tensor::from_vec(y, (m, n), &Device::Cpu).unwrap();
                    let d = max_abs_diff(&got, &want);
                    assert!(
                        d < 1e-4 * k as f32,
                        "{m}x{n}x{k} {dt:?} {kern:?}: off by {d}"
                    );
                }
                // And through the public entry point, which picks the kernel itself.
                let got = matmul_t(&x, &w).unwrap();
                assert_eq!(got.dims(), &[m, n]);
                assert!(max_abs_diff(&got, &want) < 1e-4 * k as f32);
            }
        }
    }

    #[test]
    fn many_rows_go_to_gemm_with_a_widened_weight() {
        let x = random((STREAM_MAX_ROWS + 3, 24), 3);
        let w = random((10, 24), 4).to_dtype(DType::BF16).unwrap();
        let want = x
            .matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
            .unwrap();
        let got = matmul_t(&x, &w).unwrap();
        assert_eq!(got.dtype(), DType::F32);
        assert!(max_abs_diff(&got, &want) < 1e-4);
    }

    #[test]
    fn a_weight_beyond_bf16s_range_is_refused_with_what_to_do() {
        let w = Tensor::new(&[[1f32, f32::MAX]], &Device::Cpu).unwrap();
        let err = to_frozen_bf16(&w).unwrap_err().to_string();
        assert!(err.contains("--dtype f32"), "{err}");
        assert!(to_frozen_bf16(&random((3, 3), 5)).is_ok());
    }
}
