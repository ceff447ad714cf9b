//! A sum of matrix products built in one buffer: Σ cᵢ · Lᵢ Rᵢ, each product added in place by
//! gemm on the CPU in f32.
//!
//! Why it exists: a projection with adapters is x Wᵀ + Σ c · (x Aᵀ) Bᵀ, and its backward
//! g W + Σ c · (g B) A; gate and up, and q, k and v, send their input gradients to one sum.
//! Written as candle ops, each term is a fresh (rows × out) tensor, zero-filled, then added to
//! the last in another pass: at batch 8 × 256 that is a few hundred MB of fresh pages a layer.
//! gemm adds a product into its destination itself (`read_dst`), so here each term costs only
//! its product. Other devices and dtypes build the same sum with candle ops.

use crate::error::Result;
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

/// Σ cᵢ · Lᵢ Rᵢ, (m, n), for 2-D operands of any strides (a transposed view included).
pub enum ProductSum {
    Cpu { data: Vec<f32>, m: usize, n: usize },
    Tensors(Tensor),
}

impl ProductSum {
    /// lhs (m, k) · rhs (k, n).
    pub fn new(lhs: &Tensor, rhs: &Tensor) -> Result<Self> {
        let (m, _) = lhs.dims2()?;
        let (_, n) = rhs.dims2()?;
        if is_cpu_f32(lhs) && is_cpu_f32(rhs) {
            let mut data = vec![0f32; m * n];
            gemm_into(&mut data, n, lhs, rhs, 1.0, false)?;
            return Ok(ProductSum::Cpu { data, m, n });
        }
        Ok(ProductSum::Tensors(lhs.matmul(rhs)?))
    }

    /// Adds scale · lhs (m, k) · rhs (k, n).
    pub fn add(&mut self, lhs: &Tensor, rhs: &Tensor, scale: f64) -> Result<()> {
        match self {
            ProductSum::Cpu { data, n, .. } if is_cpu_f32(lhs) && is_cpu_f32(rhs) => {
                gemm_into(data, *n, lhs, rhs, scale as f32, true)
            }
            _ => {
                let t = (lhs.matmul(rhs)? * scale)?;
                self.add_tensor(&t)
            }
        }
    }

    /// Adds a tensor of the sum's shape (a term that is not a plain product).
    pub fn add_tensor(&mut self, t: &Tensor) -> Result<()> {
        match self {
            ProductSum::Cpu { data, m, n } => {
                if t.dims() != [*m, *n] {
                    return Err(crate::error::CoreError::tensor(
                        "a term of a product sum",
                        format!("has shape {:?}, expected ({m}, {n})", t.dims()),
                    ));
                }
                let t = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                for (d, v) in data.iter_mut().zip(t) {
                    *d += v;
                }
            }
            ProductSum::Tensors(sum) => *sum = (&*sum + t)?,
        }
        Ok(())
    }

    /// The sum as a tensor.
    pub fn finish(self) -> Result<Tensor> {
        Ok(match self {
            ProductSum::Cpu { data, m, n } => Tensor::from_vec(data, (m, n), &Device::Cpu)?,
            ProductSum::Tensors(t) => t,
        })
    }
}

fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.rank() == 2
}

/// lhs (..., m, k) · rhs (..., k, n) → (..., m, n) for operands of the same batch shape and any
/// strides (a transposed view included). On the CPU in f32 the batch is split over threads,
/// each product one gemm call on one thread: attention's products are many small ones
/// (24 of 768 × 64 by 64 × 256 a layer at batch 8 × 256), where candle's matmul hands each
/// product in turn to both threads and waits for them. Elsewhere candle's matmul.
pub fn batched_matmul(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    let (ld, rd) = (lhs.dims(), rhs.dims());
    let rank = ld.len();
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if rank < 3
        || rd.len() != rank
        || ld[..rank - 2] != rd[..rank - 2]
        || !cpu_f32(lhs)
        || !cpu_f32(rhs)
    {
        return Ok(lhs.matmul(rhs)?);
    }
    let (m, k, n) = (ld[rank - 2], ld[rank - 1], rd[rank - 1]);
    if rd[rank - 2] != k {
        return Ok(lhs.matmul(rhs)?);
    }
    let batch: usize = ld[..rank - 2].iter().product();
    let mut out = vec![0f32; batch * m * n];
    if m * n > 0 {
        let (ls, ll) = lhs.storage_and_layout();
        let (rs, rl) = rhs.storage_and_layout();
        let lhs_op = Operand::of(&ls, ll)?;
        let rhs_op = Operand::of(&rs, rl)?;
        out.par_chunks_mut(m * n)
            .enumerate()
            .try_for_each(|(i, dst)| {
                let (l, r) = (lhs_op.at(i, ld), rhs_op.at(i, rd));
                gemm_serial(dst, n, (m, n, k), &l, &r, false)
            })?;
    }
    let mut shape = ld[..rank - 2].to_vec();
    shape.extend([m, n]);
    Ok(Tensor::from_vec(out, shape, lhs.device())?)
}

/// A CPU f32 operand: its storage, the offset of a product's first element and the strides of
/// its dims (the last two a matrix's rows and columns).
struct Operand<'a> {
    data: &'a [f32],
    start: usize,
    strides: Vec<usize>,
}

impl<'a> Operand<'a> {
    fn of(storage: &'a Storage, layout: &candle_core::Layout) -> Result<Self> {
        match storage {
            Storage::Cpu(CpuStorage::F32(data)) => Ok(Operand {
                data,
                start: layout.start_offset(),
                strides: layout.stride().to_vec(),
            }),
            _ => Err(crate::error::CoreError::Internal(
                "products: an operand is not f32 on the CPU".into(),
            )),
        }
    }

    /// The matrix at flat batch index `i` of `dims`' batch dims: (offset, row, column strides).
    fn at(&self, mut i: usize, dims: &[usize]) -> Matrix<'a> {
        let rank = dims.len();
        let mut offset = self.start;
        for d in (0..rank - 2).rev() {
            offset += (i % dims[d]) * self.strides[d];
            i /= dims[d];
        }
        Matrix {
            data: self.data,
            offset,
            rs: self.strides[rank - 2],
            cs: self.strides[rank - 1],
        }
    }
}

/// One matrix inside a storage.
pub(super) struct Matrix<'a> {
    data: &'a [f32],
    offset: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Matrix<'a> {
    /// The matrix whose element (i, j) is `data[offset + i · rs + j · cs]`.
    pub(super) fn new(data: &'a [f32], offset: usize, rs: usize, cs: usize) -> Self {
        Matrix {
            data,
            offset,
            rs,
            cs,
        }
    }

    /// Whether every element of a (rows, cols) matrix at this place lies inside the storage.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        let last = self.offset + (rows.max(1) - 1) * self.rs + (cols.max(1) - 1) * self.cs;
        last < self.data.len()
    }
}

/// dst (m, n) row-major ← (dst if `accumulate`) + scale · lhs (m, k) · rhs (k, n).
fn gemm_into(
    dst: &mut [f32],
    n: usize,
    lhs: &Tensor,
    rhs: &Tensor,
    scale: f32,
    accumulate: bool,
) -> Result<()> {
    let (m, k) = lhs.dims2()?;
    let (k2, n2) = rhs.dims2()?;
    if k != k2 || n != n2 || dst.len() != m * n {
        return Err(candle_core::Error::ShapeMismatchBinaryOp {
            lhs: lhs.shape().clone(),
            rhs: rhs.shape().clone(),
            op: "product-sum",
        }
        .into());
    }
    let (ls, ll) = lhs.storage_and_layout();
    let (rs, rl) = rhs.storage_and_layout();
    let (l, r) = (
        Operand::of(&ls, ll)?.at(0, &[m, k]),
        Operand::of(&rs, rl)?.at(0, &[k, n]),
    );
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm_checked(dst, n, (m, n, k), &l, &r, scale, accumulate, parallelism)
}

/// dst (m, n), rows `dst_rs` apart ← (dst if `accumulate`) + lhs (m, k) · rhs (k, n), on the
/// calling thread: for kernels that split their work over threads themselves.
pub(super) fn gemm_serial(
    dst: &mut [f32],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: &Matrix,
    rhs: &Matrix,
    accumulate: bool,
) -> Result<()> {
    let serial = gemm::Parallelism::None;
    gemm_checked(dst, dst_rs, (m, n, k), lhs, rhs, 1.0, accumulate, serial)
}

/// gemm on matrices whose every element was checked to lie in its storage; dst's rows are
/// `dst_rs` apart.
#[allow(clippy::too_many_arguments)]
fn gemm_checked(
    dst: &mut [f32],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: &Matrix,
    rhs: &Matrix,
    scale: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) -> Result<()> {
    if m * n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return Ok(());
    }
    if dst_rs < n || dst.len() < (m - 1) * dst_rs + n || !lhs.fits(m, k) || !rhs.fits(k, n) {
        return Err(crate::error::CoreError::Internal(
            "products: an operand's layout reaches past its storage".into(),
        ));
    }
    // SAFETY: dst holds m rows of n elements, dst_rs apart; the check above keeps every
    // element that lhs's and rhs's offsets and strides address inside their storages. gemm
    // computes dst = alpha · dst + beta · lhs · rhs, reading dst only when `read_dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        crate::test_support::uniform(&[shape.0, shape.1], 1.0, seed)
    }

    #[test]
    fn a_term_of_the_wrong_shape_is_refused() {
        let mut sum = ProductSum::new(&random((6, 5), 1), &random((5, 4), 2)).unwrap();
        let err = sum.add_tensor(&random((6, 3), 3)).unwrap_err().to_string();
        assert!(err.contains("(6, 4)"), "{err}");
    }

    /// Batched products of contiguous and transposed (strided) operands, with 1 and 2 batch
    /// dims, equal candle's matmul.
    #[test]
    fn a_batched_product_equals_candles_matmul() {
        let a = random((2 * 3 * 5, 4), 6).reshape((2, 3, 5, 4)).unwrap();
        let b = random((2 * 3 * 5, 6), 7).reshape((2, 3, 5, 6)).unwrap();
        let at = a.transpose(2, 3).unwrap(); // (2, 3, 4, 5), strided
        for (l, r) in [(&at, &b), (&b.transpose(2, 3).unwrap(), &a)] {
            let want = l.matmul(r).unwrap();
            let got = batched_matmul(l, r).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(max_abs_diff(&got, &want) < 1e-5);
        }
        let flat = (a.reshape((6, 5, 4)).unwrap(), b.reshape((6, 5, 6)).unwrap());
        let want = flat.0.t().unwrap().matmul(&flat.1).unwrap();
        let got = batched_matmul(&flat.0.t().unwrap(), &flat.1).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    /// Products of contiguous, transposed and offset operands, scaled, and a plain term, on
    /// the CPU kernel and on the candle form (f64 operands), against candle's own arithmetic.
    #[test]
    fn a_product_sum_equals_the_sum_of_candles_products() {
        let x = random((37, 20), 1);
        let w = random((29, 20), 2); // used as wᵀ: (20, 29)
        let u = random((37, 4), 3);
        let b_wide = random((29, 9), 4); // 4 of its columns (an offset view), transposed: (4, 29)
        let b = b_wide.narrow(1, 2, 4).unwrap();
        let extra = random((37, 29), 5);
        let want = ((x.matmul(&w.t().unwrap()).unwrap()
            + (u.matmul(&b.t().unwrap()).unwrap() * 0.5).unwrap())
        .unwrap()
            + &extra)
            .unwrap();
        for dt in [DType::F32, DType::F64] {
            let c = |t: &Tensor| t.to_dtype(dt).unwrap();
            let mut sum = ProductSum::new(&c(&x), &c(&w).t().unwrap()).unwrap();
            sum.add(&c(&u), &c(&b).t().unwrap(), 0.5).unwrap();
            sum.add_tensor(&c(&extra)).unwrap();
            assert_eq!(matches!(sum, ProductSum::Cpu { .. }), dt == DType::F32);
            let got = sum.finish().unwrap().to_dtype(DType::F32).unwrap();
            assert!(
                max_abs_diff(&got, &want) < 1e-4,
                "{dt:?}: {}",
                max_abs_diff(&got, &want)
            );
        }
    }
}
