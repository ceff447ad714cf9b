//! Differentiable forms of the decoder's operations that cost what the fused kernels cost.
//!
//! candle's backward computes the gradient of both sides of every matmul, so a frozen
//! projection pays for a weight gradient nobody reads; and the composite forms of softmax,
//! rms_norm and rope (the fused kernels have no backward) walk their tensors many times in both
//! directions. Each op here runs the fused forward without a graph, then joins the result to
//! its input's graph through [`WithBackward`], whose backward is written out by hand: only the
//! gradient the input needs, in a few passes.

use crate::error::Result;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, Layout, Shape, Storage, Tensor};

type Backward = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// A result computed without a graph, attached to the graph of `input`: the forward returns
/// (a copy of) `result`, the backward maps the result's gradient to the input's with `grad`,
/// given (input, result's gradient).
struct WithBackward {
    name: &'static str,
    result: Tensor,
    grad: Box<Backward>,
}

impl WithBackward {
    fn apply(
        input: &Tensor,
        result: Tensor,
        name: &'static str,
        grad: impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        if !input.track_op() {
            return Ok(result);
        }
        // The forward hands back the result's storage as laid out from offset 0.
        let result = if result.is_contiguous() && result.layout().start_offset() == 0 {
            result
        } else {
            result.copy()?
        };
        let op = WithBackward {
            name,
            result,
            grad: Box::new(grad),
        };
        Ok(input.apply_op1(op)?)
    }
}

impl candle_core::CustomOp1 for WithBackward {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.result.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: the result is not on the CPU", self.name),
        }
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (storage, layout) = self.result.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: the result is not on the GPU", self.name),
        }
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = (self.grad)(arg, grad).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Some(g))
    }
}

/// x: (n, in), w: (out, in) frozen → x wᵀ: (n, out). The backward gives x its gradient
/// (g w) and skips the weight's, which candle would compute and throw away.
/// A bf16 weight beside f32 activations (`--dtype bf16` on the CPU) is widened for the product.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let w = w.to_dtype(x.dtype())?;
    let y = x.detach().matmul(&w.t()?)?;
    WithBackward::apply(x, y, "frozen-linear", move |_, g| Ok(g.matmul(&w)?))
}

/// softmax(scale · scores + mask) over the last axis, scores: (..., t), mask broadcastable
/// to scores and frozen. Backward: scale · p ⊙ (g − Σ g ⊙ p).
pub fn masked_softmax(scores: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let p = super::fused::masked_softmax(&scores.detach(), mask, scale)?;
    let saved = p.clone();
    WithBackward::apply(scores, p, "masked-softmax", move |_, g| {
        super::fused::softmax_backward(&saved, g, scale)
    })
}

/// rms_norm(x) · w over the last axis, w frozen. Backward, with r = 1/√(mean x² + eps) and
/// u = g ⊙ w: r · (u − x · r² · mean(u ⊙ x)), computed in f32.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let y = candle_nn::ops::rms_norm(&x.detach().contiguous()?, w, eps as f32)?;
    let w = w.clone();
    WithBackward::apply(x, y, "rms-norm", move |x, g| {
        super::fused::rms_norm_backward(x, &w, eps, g, None)
    })
}

/// HF's rotate-half rotary embedding of x: (b, h, s, d) with cos, sin: (b, s, d/2). A rotation
/// by θ has the rotation by −θ as its transpose, so the backward is the same kernel with −sin.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    let y = candle_nn::rotary_emb::rope(&x.detach().contiguous()?, &cos, &sin)?;
    let neg_sin = sin.neg()?;
    WithBackward::apply(x, y, "rope", move |_, g| {
        Ok(candle_nn::rotary_emb::rope(
            &g.contiguous()?,
            &cos,
            &neg_sin,
        )?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        crate::test_support::uniform(shape, 1.0, seed)
    }

    /// The op's value and input gradient (under the weighting `probe`) against candle's
    /// autodiff of the composite form.
    fn check(
        x: &Tensor,
        op: impl Fn(&Tensor) -> Result<Tensor>,
        composite: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) {
        let grad_and_value = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
            let v = Var::from_tensor(x).unwrap();
            let y = f(v.as_tensor()).unwrap();
            let probe = randn(y.dims(), 99);
            let g = (&y * probe).unwrap().sum_all().unwrap().backward().unwrap();
            (y, g.get(v.as_tensor()).unwrap().clone())
        };
        let (y1, g1) =
            grad_and_value(&|t| op(t).map_err(|e| candle_core::Error::Msg(e.to_string())));
        let (y2, g2) = grad_and_value(&composite);
        let diff = crate::test_support::max_abs_diff;
        assert!(diff(&y1, &y2) < 1e-5, "values differ by {}", diff(&y1, &y2));
        assert!(
            diff(&g1, &g2) < 1e-4,
            "gradients differ by {}",
            diff(&g1, &g2)
        );
    }

    /// [`cross_entropy_with_grad`] joined to a graph, for `check`.
    fn cross_entropy_rows(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (nll, grad) =
            super::super::fused::cross_entropy_with_grad(&logits.detach(), labels, 1.0)?;
        WithBackward::apply(logits, nll, "cross-entropy", move |_, g| {
            Ok(grad.broadcast_mul(&g.unsqueeze(1)?)?)
        })
    }

    #[test]
    fn cross_entropy_matches_log_softmax() {
        let labels = Tensor::from_vec(vec![0u32, 4, 2], 3, &Device::Cpu).unwrap();
        check(
            &(randn(&[3, 5], 10) * 8.0).unwrap(),
            |x| cross_entropy_rows(x, &labels),
            |x| {
                let lsm = candle_nn::ops::log_softmax(x, D::Minus1)?;
                lsm.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
            },
        );
    }

    #[test]
    fn frozen_linear_matches_matmul() {
        let w = randn(&[5, 7], 1);
        check(
            &randn(&[6, 7], 2),
            |x| frozen_linear(x, &w),
            |x| x.matmul(&w.t()?),
        );
    }

    #[test]
    fn masked_softmax_matches_composite() {
        let mask = randn(&[1, 1, 4, 6], 3);
        check(
            &randn(&[2, 3, 4, 6], 4),
            |x| masked_softmax(x, Some(&mask), 0.5),
            |x| candle_nn::ops::softmax(&(x * 0.5)?.broadcast_add(&mask)?, D::Minus1),
        );
    }

    #[test]
    fn rms_norm_matches_composite() {
        let w = randn(&[8], 5);
        check(
            &randn(&[2, 3, 8], 6),
            |x| rms_norm(x, &w, 1e-5),
            |x| {
                let r = (x.sqr()?.mean_keepdim(D::Minus1)? + 1e-5)?.sqrt()?;
                x.broadcast_div(&r)?.broadcast_mul(&w)
            },
        );
    }

    #[test]
    fn rope_matches_rotate_half() {
        let (cos, sin) = (randn(&[2, 4, 3], 7), randn(&[2, 4, 3], 8));
        check(
            &randn(&[2, 5, 4, 6], 9),
            |x| rope(x, &cos, &sin),
            |x| {
                let c = Tensor::cat(&[&cos, &cos], D::Minus1)?.unsqueeze(1)?;
                let s = Tensor::cat(&[&sin, &sin], D::Minus1)?.unsqueeze(1)?;
                let rot = Tensor::cat(
                    &[
                        &x.narrow(D::Minus1, 3, 3)?.neg()?,
                        &x.narrow(D::Minus1, 0, 3)?,
                    ],
                    D::Minus1,
                )?;
                x.broadcast_mul(&c)? + rot.broadcast_mul(&s)?
            },
        );
    }
}
