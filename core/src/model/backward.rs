//! Training's backward pass written out by hand: one decoder layer at a time from what its
//! forward recorded (a [`LayerTape`]), and the head with its cross-entropy.
//!
//! candle's autodiff allocates, zero-fills and accumulates a gradient for every node of the
//! graph, copies through every reshape and transpose, and computes both sides of every matmul.
//! Here the forward runs the fused kernels without a graph, and each gradient is one matmul or
//! a few passes: the frozen weights get none, the adapters' factors get theirs only when they
//! are variables (LoRA training), the stack's coefficients theirs only when they are learned
//! (CAT). `Mode::Train`'s graph stays as the reference this is tested against.

use super::attention;
use super::fused;
use super::llama::{Frame, Llama, Mode, Projection};
use super::products::{batched_matmul, ProductSum};
use crate::error::{CoreError, Result};
use crate::lora::stack::Coefficient;
use crate::lora::{AdapterStack, Module, ALL_MODULES};
use candle_core::{DType, Tensor, TensorId, Var};
use std::collections::HashMap;

/// What one layer's forward keeps for its backward, in the model's dtype. The normed inputs of
/// the projections are not kept: rms_norm is cheap to redo.
#[derive(Debug, Default)]
pub struct LayerTape {
    /// The layer's input: (b, s, hidden).
    pub(super) x: Option<Tensor>,
    /// Queries and keys after rope, and values: (b, heads, s, head_dim).
    pub(super) q: Option<Tensor>,
    pub(super) k: Option<Tensor>,
    pub(super) v: Option<Tensor>,
    /// Attention probabilities: (b, kv_heads, rep, s, t).
    pub(super) probs: Option<Tensor>,
    /// The attention's output entering o_proj: (b, s, heads * head_dim).
    pub(super) attn: Option<Tensor>,
    /// The residual stream after attention: (b, s, hidden).
    pub(super) x2: Option<Tensor>,
    /// (b, s, intermediate)
    pub(super) gate: Option<Tensor>,
    pub(super) up: Option<Tensor>,
    /// Per module (in `ALL_MODULES` order), per adapter of the stack: x Aᵀ, (b·s, r).
    pub(super) lora: [Vec<Tensor>; ALL_MODULES.len()],
}

fn taped(t: Option<Tensor>, what: &str) -> Result<Tensor> {
    t.ok_or_else(|| CoreError::Internal(format!("the layer's tape has no {what}")))
}

/// The gradients a step gives the trainable tensors of a stack, gathered over its layers.
#[derive(Debug, Default)]
pub struct StackGrads {
    /// Gradients of the adapters' A and B factors that are variables, by tensor.
    factors: HashMap<TensorId, Option<Tensor>>,
    /// Learned coefficients (functions of the CAT logits) and the gradient of each.
    coefs: Vec<(Tensor, Tensor)>,
}

impl StackGrads {
    fn add_factor(&mut self, factor: &Tensor, g: Tensor) -> Result<()> {
        let acc = self.factors.entry(factor.id()).or_default();
        add_grad(acc, g.to_dtype(factor.dtype())?)
    }

    /// The gradients of `vars`, in their order (`None` for one nothing reached). Coefficients
    /// pass theirs on through whatever made them (the CAT softmax) by candle's autodiff of
    /// Σ c · ∂L/∂c, a graph of a few hundred scalars.
    pub fn for_vars(mut self, vars: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let mut out: Vec<Option<Tensor>> = vars
            .iter()
            .map(|v| self.factors.remove(&v.as_tensor().id()).flatten())
            .collect();
        let mut total: Option<Tensor> = None;
        for (c, g) in &self.coefs {
            let t = (c.to_dtype(DType::F32)? * g.to_dtype(DType::F32)?)?.sum_all()?;
            add_grad(&mut total, t)?;
        }
        if let Some(total) = total {
            let grads = total.backward()?;
            for (o, v) in out.iter_mut().zip(vars) {
                if let Some(g) = grads.get(v.as_tensor()) {
                    add_grad(o, g.clone())?;
                }
            }
        }
        Ok(out)
    }
}

/// Adds `g` to the gradient accumulated in `acc` (the sites and layers of one step, the
/// micro-batches of one optimizer step).
pub(crate) fn add_grad(acc: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *acc = Some(match acc.take() {
        Some(a) => (a + g)?,
        None => g,
    });
    Ok(())
}

/// Target rows per chunk of the head: 256 x 49,152 logits are 50 MB.
const HEAD_CHUNK: usize = 256;

impl Llama {
    /// The backward of one layer: gy (b, s, hidden) is the gradient of its output, `tape` what
    /// its forward recorded with the same `mode` and `stack`. Adds the adapters' gradients to
    /// `grads` and returns the gradient of the layer's input (`None` with `input_grad` false,
    /// for the bottom layer, whose input is a constant).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_backward(
        &self,
        l: usize,
        tape: LayerTape,
        frame: &Frame,
        stack: &AdapterStack,
        mode: Mode,
        gy: &Tensor,
        grads: &mut StackGrads,
        input_grad: bool,
    ) -> Result<Option<Tensor>> {
        let layer = &self.layers[l];
        let (b, s, hidden) = gy.dims3()?;
        let n = b * s;
        let nh = self.cfg.num_attention_heads;
        let nkv = self.cfg.num_key_value_heads;
        let d = self.cfg.head_dim;
        let rep = nh / nkv;
        let eps = self.cfg.rms_norm_eps;
        let lora = tape.lora;
        let back = |g: &Tensor,
                    m: Module,
                    x: &Tensor,
                    grads: &mut StackGrads,
                    gx: Option<&mut Option<ProductSum>>| {
            let site = Site {
                layer: l,
                module: m,
                stack,
                mode,
            };
            site.backward(layer.projection(m), x, g, &lora[m.index()], grads, gx)
        };
        // The input gradient of one projection, or the sum of several's.
        let input_grad_of = |sum: Option<ProductSum>| -> Result<Tensor> {
            sum.ok_or_else(|| CoreError::Internal("no input gradient was summed".into()))?
                .finish()
        };
        let flat = |t: &Tensor| -> Result<Tensor> {
            let last = t.dims().last().copied().unwrap_or(1);
            Ok(t.reshape((n, last))?)
        };

        // MLP: y = x2 + down(silu(gate) ⊙ up), gate and up of h2 = rms_norm(x2).
        let gy = flat(gy)?;
        let x2 = flat(&taped(tape.x2, "residual")?)?;
        let gate = flat(&taped(tape.gate, "gate")?)?;
        let up = flat(&taped(tape.up, "up")?)?;
        let act = fused::swiglu(&gate, &up)?;
        let mut g_act = None;
        back(&gy, Module::Down, &act, grads, Some(&mut g_act))?;
        let g_act = input_grad_of(g_act)?;
        drop(act);
        let (g_gate, g_up) = fused::swiglu_backward(&gate, &up, &g_act)?;
        drop((gate, up, g_act));
        let h2 = candle_nn::ops::rms_norm(&x2, &layer.post_norm, eps as f32)?;
        let mut g_h2 = None;
        back(&g_gate, Module::Gate, &h2, grads, Some(&mut g_h2))?;
        back(&g_up, Module::Up, &h2, grads, Some(&mut g_h2))?;
        let g_h2 = input_grad_of(g_h2)?;
        let g_x2 = fused::rms_norm_backward(&x2, &layer.post_norm, eps, &g_h2, Some(&gy))?;

        // Attention, in the forward's grouped layout: the rep query heads of a kv head are
        // stacked along the sequence axis. q5, g_o: (b, nkv, rep * s, d); probs: (.., t).
        let attn = flat(&taped(tape.attn, "attention output")?)?;
        let mut g_attn = None;
        back(&g_x2, Module::O, &attn, grads, Some(&mut g_attn))?;
        let g_attn = input_grad_of(g_attn)?;
        let g_o = g_attn
            .reshape((b, s, nh, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, nkv, rep * s, d))?;
        let q = taped(tape.q, "queries")?;
        let k = taped(tape.k, "keys")?;
        let v = taped(tape.v, "values")?;
        let t = k.dims()[2];
        let probs = taped(tape.probs, "attention probabilities")?.reshape((b, nkv, rep * s, t))?;
        let q5 = q.reshape((b, nkv, rep * s, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        // Without cached positions the probabilities are 0 after each query's position, and
        // the blocked kernel skips that half.
        let causal = if frame.causal && t == s {
            attention::causal_backward(&q5, &k, &v, &probs, &g_o, scale)?
        } else {
            None
        };
        let (g_q, g_k, g_v) = match causal {
            Some(done) => done,
            None => {
                let g_probs = batched_matmul(&g_o, &v.t()?)?;
                let g_v = batched_matmul(&probs.t()?, &g_o)?;
                let g_scores = fused::softmax_backward(&probs, &g_probs, scale)?;
                drop((probs, g_probs));
                let g_q = batched_matmul(&g_scores, &k)?;
                let g_k = batched_matmul(&g_scores.t()?, &q5)?;
                (g_q, g_k, g_v)
            }
        };
        let g_q = g_q.reshape((b, nh, s, d))?;
        // rope is a rotation: its backward rotates back.
        let neg_sin = frame.sin.neg()?;
        let unrope = |g: &Tensor| candle_nn::rotary_emb::rope(g, &frame.cos, &neg_sin);
        let heads_last = |g: Tensor, heads: usize| -> Result<Tensor> {
            Ok(g.transpose(1, 2)?.contiguous()?.reshape((n, heads * d))?)
        };
        let g_q = heads_last(unrope(&g_q)?, nh)?;
        let g_k = heads_last(unrope(&g_k.contiguous()?)?, nkv)?;
        let g_v = heads_last(g_v, nkv)?;
        let x = flat(&taped(tape.x, "input")?)?;
        let h1 = candle_nn::ops::rms_norm(&x, &layer.input_norm, eps as f32)?;
        let mut g_h1 = None;
        for (g, m) in [(&g_q, Module::Q), (&g_k, Module::K), (&g_v, Module::V)] {
            back(g, m, &h1, grads, input_grad.then_some(&mut g_h1))?;
        }
        if !input_grad {
            return Ok(None);
        }
        let g_h1 = input_grad_of(g_h1)?;
        let gx = fused::rms_norm_backward(&x, &layer.input_norm, eps, &g_h1, Some(&g_x2))?;
        Ok(Some(gx.reshape((b, s, hidden))?))
    }

    /// The mean cross-entropy of the targets `labels` (n) predicted at the flattened positions
    /// `rows` (n) of the last layer's output x (b, s, hidden), and the gradient of `scale` ×
    /// that loss with respect to x. The final norm and the lm_head run on the target rows alone,
    /// in chunks, each chunk's logits dropped once its gradient reached x.
    pub fn head_loss_backward(
        &self,
        x: &Tensor,
        rows: &Tensor,
        labels: &Tensor,
        scale: f64,
    ) -> Result<(f64, Tensor)> {
        let (b, s, hidden) = x.dims3()?;
        let n = rows.dims1()?;
        let eps = self.cfg.rms_norm_eps;
        let x = x.reshape((b * s, hidden))?;
        let mut gx = x.zeros_like()?;
        let mut loss = 0f64;
        // A bf16 head beside f32 activations (`--dtype bf16` on the CPU) is widened once.
        let lm_head = self.lm_head.to_dtype(x.dtype())?;
        for start in (0..n).step_by(HEAD_CHUNK) {
            let len = HEAD_CHUNK.min(n - start);
            let rows = rows.narrow(0, start, len)?;
            // xs, hn: (len, hidden); logits: (len, vocab)
            let xs = x.index_select(&rows, 0)?;
            let hn = candle_nn::ops::rms_norm(&xs, &self.norm, eps as f32)?;
            let logits = hn.matmul(&lm_head.t()?)?.to_dtype(DType::F32)?;
            let labels = labels.narrow(0, start, len)?;
            let (nll, g) = fused::cross_entropy_with_grad(&logits, &labels, scale / n as f64)?;
            loss += nll.sum_all()?.to_scalar::<f32>()? as f64;
            let g = g.to_dtype(x.dtype())?;
            let g_hn = g.matmul(&lm_head)?;
            let g_xs = fused::rms_norm_backward(&xs, &self.norm, eps, &g_hn, None)?;
            gx = gx.index_add(&rows, &g_xs, 0)?;
        }
        Ok((loss / n as f64, gx.reshape((b, s, hidden))?))
    }
}

/// One projection of one layer, with the stack's adapters on it.
struct Site<'a> {
    layer: usize,
    module: Module,
    stack: &'a AdapterStack,
    mode: Mode,
}

impl Site<'_> {
    /// The backward of the projection y = x Wᵀ + Σ cᵢ · drop(x) Aᵢᵀ Bᵢᵀ: g (n, out) is the
    /// gradient of y, x (n, in) its input, `us` each adapter's drop(x) Aᵢᵀ (n, r). Adds the
    /// adapters' gradients to `grads`, and x's to the sum in `gx` (started there when empty;
    /// not computed when `gx` is `None`).
    fn backward(
        &self,
        p: &Projection,
        x: &Tensor,
        g: &Tensor,
        us: &[Tensor],
        grads: &mut StackGrads,
        gx: Option<&mut Option<ProductSum>>,
    ) -> Result<()> {
        let dt = g.dtype();
        let dropout = self.mode.lora_dropout(self.layer, self.module);
        let weight = p.weight.to_dtype(dt)?;
        let mut gx = match gx {
            Some(Some(sum)) => {
                sum.add(g, &weight, 1.0)?;
                Some(sum)
            }
            Some(slot) => Some(slot.insert(ProductSum::new(g, &weight)?)),
            None => None,
        };
        let pairs = self.stack.at(self.layer, self.module)?;
        if pairs.len() != us.len() {
            return Err(CoreError::Internal(format!(
                "layer {} {}: the tape holds {} adapter inputs for {} adapters",
                self.layer,
                self.module.hf_name(),
                us.len(),
                pairs.len()
            )));
        }
        for ((pair, coef), u) in pairs.into_iter().zip(us) {
            // Detached: a computation on the variables themselves would build a graph that
            // keeps every layer's gradients alive.
            let (a, b) = (pair.a.detach().to_dtype(dt)?, pair.b.detach().to_dtype(dt)?);
            let times_coef = |t: Tensor| -> Result<Tensor> {
                Ok(match &coef {
                    Coefficient::Const(c) => (t * *c)?,
                    // Detached: the chain rule through the coefficient is for_vars's.
                    Coefficient::Tensor(c) => t.broadcast_mul(&c.detach().to_dtype(dt)?)?,
                })
            };
            // The gradient of u = drop(x) Aᵀ, before the coefficient: (n, r).
            let gu = g.matmul(&b)?;
            if pair.b.is_variable() {
                // (out, n) (n, r)
                grads.add_factor(&pair.b, times_coef(g.t()?.matmul(u)?)?)?;
            }
            if let Coefficient::Tensor(c) = &coef {
                grads
                    .coefs
                    .push((c.clone(), (&gu * u)?.sum_all()?.detach()));
            }
            let gu = times_coef(gu)?;
            if pair.a.is_variable() {
                let xd = match dropout {
                    Some((p, seed)) => super::dropout::apply(x, p, seed)?,
                    None => x.clone(),
                };
                // (r, n) (n, in)
                grads.add_factor(&pair.a, gu.t()?.matmul(&xd)?)?;
            }
            if let Some(acc) = gx.as_mut() {
                match dropout {
                    Some((p, seed)) => {
                        acc.add_tensor(&super::dropout::apply(&gu.matmul(&a)?, p, seed)?)?
                    }
                    None => acc.add(&gu, &a, 1.0)?,
                }
            }
        }
        Ok(())
    }
}
