//! AdamW with exportable state, gradient clipping by global norm, and learning-rate schedules.
//!
//! candle-nn's `AdamW` computes the same update but keeps its moments private, so a killed job
//! could not resume to the same adapter; this one stores step count and moments in checkpoints.
//! candle has neither clipping nor schedules: both are small and tested here.

use crate::error::Result;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        // PyTorch's defaults, except weight decay 0 as in PEFT recipes.
        AdamWParams {
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over a fixed list of variables (PyTorch's update rule).
pub struct AdamW {
    pub params: AdamWParams,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: u64,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        let m = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            params,
            vars,
            m,
            v,
            step: 0,
        })
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// One update with `grads[i]` the gradient of `vars[i]` (None: no gradient this step).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let bc1 = 1.0 - p.beta1.powi(t);
        let bc2 = 1.0 - p.beta2.powi(t);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let m = ((&self.m[i] * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&m / bc1)?;
            let v_hat = (&v / bc2)?;
            let decayed = (var.as_tensor() * (1.0 - lr * p.weight_decay))?;
            let upd = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            var.set(&(decayed - (upd * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// First and second moments, for checkpoints.
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.m, &self.v)
    }

    pub fn restore(&mut self, m: Vec<Tensor>, v: Vec<Tensor>, step: u64) {
        self.m = m;
        self.v = v;
        self.step = step;
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter().flatten() {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        // PyTorch's clip_grad_norm_: coefficient max_norm / (norm + 1e-6).
        let c = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * c)?;
        }
    }
    Ok(norm)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    #[default]
    Linear,
    Cosine,
    Constant,
}

impl std::str::FromStr for Decay {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "linear" => Ok(Decay::Linear),
            "cosine" => Ok(Decay::Cosine),
            "constant" => Ok(Decay::Constant),
            _ => Err(format!(
                "unknown schedule {s:?}: expected linear, cosine or constant"
            )),
        }
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up over `warmup`
/// steps, then decay to 0 (transformers' get_linear/cosine_schedule_with_warmup).
pub fn lr_at(base: f64, step: usize, total: usize, warmup: usize, decay: Decay) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let rest = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / rest).min(1.0);
    match decay {
        Decay::Constant => base,
        Decay::Linear => base * (1.0 - progress).max(0.0),
        Decay::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert_eq!(lr_at(1.0, 0, 100, 10, Decay::Linear), 0.0);
        assert!((lr_at(1.0, 5, 100, 10, Decay::Linear) - 0.5).abs() < 1e-12);
        assert!((lr_at(1.0, 10, 100, 10, Decay::Linear) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 55, 100, 10, Decay::Linear) - 0.5).abs() < 1e-12);
        assert!((lr_at(1.0, 55, 100, 10, Decay::Cosine) - 0.5).abs() < 1e-12);
        assert!(lr_at(1.0, 100, 100, 10, Decay::Cosine).abs() < 1e-12);
        assert_eq!(lr_at(1.0, 50, 100, 10, Decay::Constant), 1.0);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let dev = Device::Cpu;
        let mut g = vec![
            Some(Tensor::new(&[3f32, 0.0], &dev).unwrap()),
            None,
            Some(Tensor::new(&[4f32], &dev).unwrap()),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let after = clip_grad_norm(&mut g, 0.0).unwrap();
        assert!((after - 1.0).abs() < 1e-5);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // With bias correction the first update is lr * g / (|g| + eps) = lr * sign(g).
        let dev = Device::Cpu;
        let var = Var::new(&[1f32, -2.0], &dev).unwrap();
        let mut opt = AdamW::new(
            vec![var.clone()],
            AdamWParams {
                lr: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        let g = Tensor::new(&[0.5f32, -3.0], &dev).unwrap();
        opt.step(&[Some(g)], 0.1).unwrap();
        let v = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 0.9).abs() < 1e-5 && (v[1] + 1.9).abs() < 1e-5,
            "{v:?}"
        );
    }
}
