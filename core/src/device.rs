//! `--device cpu|cuda[:N]` parsing, shared by every command that loads a model.

use crate::error::{CoreError, Result};
use candle_core::{DType, Device};

/// The precision of a model's frozen weights and activations, as job specs record it.
/// Adapters and CAT weights are always f32 master weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// f32 on the CPU, bf16 on a GPU.
    pub fn default_for(device: &Device) -> Precision {
        if device.is_cpu() {
            Precision::F32
        } else {
            Precision::Bf16
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Precision> {
        parse_dtype(s)
    }
}

/// `f32`, `bf16` or `f16` (the command line's `--dtype`).
pub fn parse_dtype(spec: &str) -> Result<Precision> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(Precision::F32),
        "bf16" | "bfloat16" => Ok(Precision::Bf16),
        "f16" | "float16" => Ok(Precision::F16),
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
        assert_eq!(parse_dtype("BF16").unwrap(), Precision::Bf16);
        assert_eq!(Precision::Bf16.dtype(), DType::BF16);
        assert_eq!(Precision::default_for(&Device::Cpu), Precision::F32);
        let json = serde_json::to_string(&Precision::F16).unwrap();
        assert_eq!(json, "\"f16\"");
        assert!(parse_dtype("f64").is_err());
    }
}
