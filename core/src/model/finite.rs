//! Finiteness of weights read from files. A single NaN or Inf in a model or adapter tensor
//! turns every logit into NaN and greedy decoding into token 0, with nothing to tell the user
//! why; so every float tensor is checked where it enters (safetensors, GGUF, PEFT adapters),
//! and the error names the tensor.
//!
//! The check is one pass over the tensor's memory: on the CPU it reads the (memory-mapped)
//! storage in place without copying; elsewhere it reduces `x - x` on the device (0 for finite
//! values, NaN for NaN and ±Inf).

use crate::error::Result;
use candle_core::{DType, Device, Storage, Tensor};
use half::{bf16, f16};

/// How many NaN and infinite values a tensor holds (both 0 when it is finite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NonFinite {
    pub nan: usize,
    pub inf: usize,
}

impl NonFinite {
    pub fn is_clean(&self) -> bool {
        self.nan == 0 && self.inf == 0
    }

    /// `3 NaN and 1 infinite values`, for error messages.
    pub fn describe(&self) -> String {
        match (self.nan, self.inf) {
            (n, 0) => format!("{n} NaN value(s)"),
            (0, i) => format!("{i} infinite value(s)"),
            (n, i) => format!("{n} NaN and {i} infinite value(s)"),
        }
    }
}

fn count<T: Copy>(xs: &[T], is_nan: impl Fn(T) -> bool, is_inf: impl Fn(T) -> bool) -> NonFinite {
    let mut c = NonFinite::default();
    for &x in xs {
        if is_nan(x) {
            c.nan += 1;
        } else if is_inf(x) {
            c.inf += 1;
        }
    }
    c
}

/// Counts the non-finite values of a float tensor; integer tensors are always clean.
pub fn non_finite(t: &Tensor) -> Result<NonFinite> {
    if !t.dtype().is_float() {
        return Ok(NonFinite::default());
    }
    if matches!(t.device(), Device::Cpu) {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let c = match t.dtype() {
                DType::F32 => count(
                    &cpu.as_slice::<f32>()?[start..end],
                    f32::is_nan,
                    f32::is_infinite,
                ),
                DType::F64 => count(
                    &cpu.as_slice::<f64>()?[start..end],
                    f64::is_nan,
                    f64::is_infinite,
                ),
                DType::BF16 => count(
                    &cpu.as_slice::<bf16>()?[start..end],
                    bf16::is_nan,
                    bf16::is_infinite,
                ),
                DType::F16 => count(
                    &cpu.as_slice::<f16>()?[start..end],
                    f16::is_nan,
                    f16::is_infinite,
                ),
                _ => return slow(t),
            };
            return Ok(c);
        }
    }
    slow(t)
}

/// Any device, any layout: `x - x` is 0 where x is finite and NaN elsewhere, so its sum tells
/// whether anything is non-finite; only then are the values counted on the CPU.
fn slow(t: &Tensor) -> Result<NonFinite> {
    let probe = t
        .sub(t)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    if probe.is_finite() {
        return Ok(NonFinite::default());
    }
    let all = t
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    Ok(count(&all, f32::is_nan, f32::is_infinite))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nan_and_inf_in_every_float_dtype_and_layout() {
        let dev = Device::Cpu;
        let v = vec![
            1.0f32,
            f32::NAN,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.0,
        ];
        let t = Tensor::from_vec(v, (2, 3), &dev).unwrap();
        for dt in [DType::F32, DType::F64, DType::BF16, DType::F16] {
            let c = non_finite(&t.to_dtype(dt).unwrap()).unwrap();
            assert_eq!(c, NonFinite { nan: 1, inf: 2 }, "{dt:?}");
        }
        // A transposed view is not contiguous: the slow path must agree.
        let c = non_finite(&t.t().unwrap()).unwrap();
        assert_eq!(c, NonFinite { nan: 1, inf: 2 });
        // A narrowed view only counts what it shows.
        let c = non_finite(&t.narrow(1, 2, 1).unwrap()).unwrap();
        assert!(c.is_clean(), "{c:?}");
        let c = non_finite(&t.narrow(1, 0, 1).unwrap()).unwrap();
        assert_eq!(c, NonFinite { nan: 0, inf: 1 });
        let c = non_finite(&t.narrow(1, 1, 1).unwrap()).unwrap();
        assert_eq!(c, NonFinite { nan: 1, inf: 1 });
        // Large finite values do not overflow into a false alarm.
        let big = Tensor::from_vec(vec![f32::MAX; 64], 64, &dev).unwrap();
        assert!(non_finite(&big).unwrap().is_clean());
        assert!(non_finite(&Tensor::new(&[1u32, 2], &dev).unwrap())
            .unwrap()
            .is_clean());
    }
}
