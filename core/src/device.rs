//! `--device cpu|cuda[:N]` parsing, shared by every command that loads a model.

use crate::error::{CoreError, Result};
use candle_core::{DType, Device};

/// The dtype a model's frozen weights and activations take on `device`: `$SOUP_DTYPE`
/// (`f32`, `bf16` or `f16`; the command line's `--dtype` sets it) when set, otherwise f32 on
/// the CPU and bf16 on a GPU. Adapters and CAT weights are always f32 master weights.
pub fn compute_dtype(device: &Device) -> Result<DType> {
    match std::env::var("SOUP_DTYPE") {
        Ok(spec) if !spec.trim().is_empty() => parse_dtype(&spec),
        _ => Ok(if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        }),
    }
}

/// `f32`, `bf16` or `f16`.
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(CoreError::UnknownName {
            kind: "dtype",
            name: other.to_string(),
            expected: "f32, bf16 or f16".into(),
        }),
    }
}

/// Parses a device spec as the command line writes it: `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        s if s.starts_with("cuda:") => {
            let n = s[5..]
                .parse::<usize>()
                .map_err(|_| CoreError::UnknownName {
                    kind: "device",
                    name: spec.to_string(),
                    expected: "cpu, cuda or cuda:N".into(),
                })?;
            cuda(n)
        }
        _ => Err(CoreError::UnknownName {
            kind: "device",
            name: spec.to_string(),
            expected: "cpu, cuda or cuda:N".into(),
        }),
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(CoreError::NoCuda);
    }
    Ok(Device::new_cuda(ordinal)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("CPU").unwrap().is_cpu());
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        assert_eq!(parse_dtype("BF16").unwrap(), DType::BF16);
        assert!(parse_dtype("f64").is_err());
    }
}
