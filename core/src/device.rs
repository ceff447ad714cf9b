//! `--device cpu|cuda[:N]` parsing, shared by every command that loads a model.

use crate::error::{CoreError, Result};
use candle_core::Device;

/// Parses a device spec as the command line writes it: `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        s if s.starts_with("cuda:") => {
            let n = s[5..].parse::<usize>().map_err(|_| {
                CoreError::Invalid(format!("bad device {spec:?}: expected cpu, cuda or cuda:N"))
            })?;
            cuda(n)
        }
        _ => Err(CoreError::Invalid(format!(
            "bad device {spec:?}: expected cpu, cuda or cuda:N"
        ))),
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(CoreError::Invalid(
            "this build of soup has no CUDA support: rebuild with `--features cuda`, or use --device cpu".into(),
        ));
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
    }
}
