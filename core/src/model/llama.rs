//! The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM) whose seven projections per
//! layer carry a stack of LoRA adapters.
//!
//! Two numeric paths share the weights: `Mode::Infer` uses candle's fused kernels (rms_norm,
//! softmax_last_dim, rope), which have no backward; `Mode::Train` runs the same kernels joined
//! to candle's graph with hand-written backwards (`ops`), so gradients reach the adapters' A, B
//! and the CAT weights, and frozen weights get no gradient computed. Training itself runs the
//! fused forward with a tape ([`Llama::layer_forward_taped`]) and the backward of `backward.rs`;
//! the graph is its reference and what a whole-batch loss with gradients uses.

use super::backward::LayerTape;
use super::config::ModelConfig;
use super::ops;
use super::products::ProductSum;
use crate::error::{CoreError, Result};
use crate::lora::stack::Coefficient;
use crate::lora::{AdapterStack, Module};
use candle_core::{DType, Device, IndexOp, Tensor};
use std::collections::HashMap;

/// Which numeric path the forward takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Fused kernels, no gradients.
    Infer,
    /// Differentiable ops; `dropout` is LoRA dropout on the adapters' input, drawn from a
    /// counter-based generator keyed by `seed` so a resumed run draws the same masks.
    Train { dropout: f32, seed: u64 },
    /// Training's forward pass when no graph is kept (activation checkpointing): the fused
    /// kernels, with the same dropout masks as `Train` of the same seed.
    NoGrad { dropout: f32, seed: u64 },
}

impl Mode {
    /// Whether the forward keeps a graph (the fused kernels joined to it by `ops`).
    pub fn differentiable(self) -> bool {
        matches!(self, Mode::Train { .. })
    }

    /// The same forward without a graph: what checkpointing runs first.
    pub fn without_graph(self) -> Mode {
        match self {
            Mode::Train { dropout, seed } => Mode::NoGrad { dropout, seed },
            m => m,
        }
    }

    /// LoRA dropout on the input of the adapters of `layer`'s module `m`: the probability and
    /// the seed of its mask.
    pub(super) fn lora_dropout(self, layer: usize, m: Module) -> Option<(f32, u64)> {
        self.dropout()
            .map(|(p, seed)| (p, seed ^ ((layer as u64) << 8 | m.index() as u64)))
    }

    fn dropout(self) -> Option<(f32, u64)> {
        match self {
            Mode::Train { dropout, seed } | Mode::NoGrad { dropout, seed } if dropout > 0.0 => {
                Some((dropout, seed))
            }
            _ => None,
        }
    }
}

/// What every layer of one forward call shares: rotary tables for its positions and the
/// attention mask.
#[derive(Debug, Clone)]
pub struct Frame {
    /// (b, s, head_dim / 2)
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    /// (b, 1, s, past + s), additive
    mask: Option<Tensor>,
    /// Whether the call has no cached positions, so that `mask` masks every key after its
    /// query and attention may skip them.
    pub(super) causal: bool,
}

/// A frozen projection `y = x Wᵀ (+ b)`.
#[derive(Debug, Clone)]
pub struct Projection {
    /// (out, in)
    pub weight: Tensor,
    /// (out)
    pub bias: Option<Tensor>,
}

impl Projection {
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub q: Projection,
    pub k: Projection,
    pub v: Projection,
    pub o: Projection,
    pub gate: Projection,
    pub up: Projection,
    pub down: Projection,
    /// (hidden)
    pub input_norm: Tensor,
    /// (hidden)
    pub post_norm: Tensor,
}

impl Layer {
    pub fn projection(&self, m: Module) -> &Projection {
        match m {
            Module::Q => &self.q,
            Module::K => &self.k,
            Module::V => &self.v,
            Module::O => &self.o,
            Module::Gate => &self.gate,
            Module::Up => &self.up,
            Module::Down => &self.down,
        }
    }

    pub fn projection_mut(&mut self, m: Module) -> &mut Projection {
        match m {
            Module::Q => &mut self.q,
            Module::K => &mut self.k,
            Module::V => &mut self.v,
            Module::O => &mut self.o,
            Module::Gate => &mut self.gate,
            Module::Up => &mut self.up,
            Module::Down => &mut self.down,
        }
    }
}

/// One layer's cached keys and values: (k, v), each (b, kv_heads, t, head_dim).
pub type Kv = (Tensor, Tensor);

/// One layer's cache: a prefix every row shares, stored once (1, kv_heads, p, head_dim), then
/// each row's own positions (b, kv_heads, t, head_dim). Attention reads the shared prefix for
/// all rows in one product instead of a copy per row.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    shared: Option<Kv>,
    own: Option<Kv>,
}

/// Keys and values of past positions, per layer: a shared prefix (the few-shot demos every
/// prompt starts with) and the rows' own positions after it. Positions and key masks count
/// the shared prefix first: a row's key mask is (shared + own) wide.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![LayerCache::default(); layers],
        }
    }

    /// A cache whose rows all start with the positions of `prefix`, a one-row cache without
    /// a shared part of its own; the prefix is shared, not copied per row.
    pub fn after_shared(prefix: &KvCache) -> Result<Self> {
        let mut layers = Vec::with_capacity(prefix.layers.len());
        for l in &prefix.layers {
            if l.shared.is_some() || l.own.as_ref().is_some_and(|(k, _)| k.dims()[0] != 1) {
                return Err(CoreError::Internal(
                    "a shared prefix must be a one-row cache without a shared part".into(),
                ));
            }
            layers.push(LayerCache {
                shared: l.own.clone(),
                own: None,
            });
        }
        Ok(KvCache { layers })
    }

    /// Number of cached positions: the shared prefix's and the rows' own.
    pub fn len(&self) -> usize {
        self.shared_len() + self.own_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions of the shared prefix (the first key-mask columns).
    pub fn shared_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.shared.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    fn own_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.own.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    fn own_mut(&mut self) -> impl Iterator<Item = &mut Kv> {
        self.layers.iter_mut().filter_map(|l| l.own.as_mut())
    }

    /// Keeps only the rows in `keep` (batch indices), e.g. after some sequences finished.
    pub fn select_rows(&mut self, keep: &Tensor) -> Result<()> {
        for l in self.own_mut() {
            l.0 = l.0.index_select(keep, 0)?;
            l.1 = l.1.index_select(keep, 0)?;
        }
        Ok(())
    }

    /// Inserts `n` zero positions in every row after the shared prefix: a pad that the caller
    /// masks out in its key mask, so that a shorter cache can join a batch of longer rows
    /// (continuous batching).
    pub fn pad_front(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        for l in self.own_mut() {
            // k, v: (b, kv_heads, t, head_dim)
            let (b, h, _, d) = l.0.dims4()?;
            let zeros = Tensor::zeros((b, h, n, d), l.0.dtype(), l.0.device())?;
            l.0 = Tensor::cat(&[&zeros, &l.0], 2)?;
            l.1 = Tensor::cat(&[&zeros, &l.1], 2)?;
        }
        Ok(())
    }

    /// Drops the first `n` positions after the shared prefix (columns every row masks out).
    pub fn drop_front(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        for l in self.own_mut() {
            let t = l.0.dims()[2];
            l.0 = l.0.narrow(2, n, t - n)?;
            l.1 = l.1.narrow(2, n, t - n)?;
        }
        Ok(())
    }

    /// Appends the rows of `other` (same shared prefix, as many own positions, same layers)
    /// after this cache's rows; an empty cache becomes a copy of `other`.
    pub fn append_rows(&mut self, other: &KvCache) -> Result<()> {
        if self.layers.iter().all(|l| l.own.is_none()) {
            self.layers = other.layers.clone();
            return Ok(());
        }
        if self.shared_len() != other.shared_len() {
            return Err(CoreError::Internal(
                "rows after different shared prefixes cannot join one batch".into(),
            ));
        }
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            if let (Some(m), Some(t)) = (mine.own.as_mut(), &theirs.own) {
                m.0 = Tensor::cat(&[&m.0, &t.0], 0)?;
                m.1 = Tensor::cat(&[&m.1, &t.1], 0)?;
            }
        }
        Ok(())
    }
}

/// What one forward call sees besides the token ids.
#[derive(Debug, Clone, Default)]
pub struct ForwardInput {
    /// (b, s) u32 positions; default: cache length + 0..s for every row.
    pub positions: Option<Tensor>,
    /// (b, past + s) f32, 1 for real tokens and 0 for padding (left-padded batches).
    pub key_mask: Option<Tensor>,
    /// Compute logits for the last position only (generation).
    pub last_only: bool,
    /// Compute logits only for these flattened (b * s) positions, returned as (1, n, vocab):
    /// training needs them for target tokens alone, which saves most of the lm_head's cost.
    pub rows: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub struct Llama {
    pub cfg: ModelConfig,
    /// (vocab, hidden)
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    /// (hidden)
    pub norm: Tensor,
    /// (vocab, hidden); the embedding when tied.
    pub lm_head: Tensor,
    /// (max_pos, head_dim / 2)
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

const MASKED: f32 = -1e30;

fn take(
    t: &mut HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
    dev: &Device,
) -> Result<Tensor> {
    let x = t.remove(name).ok_or_else(|| {
        CoreError::tensor(
            name,
            "missing from the checkpoint: is this a Llama-family model?",
        )
    })?;
    if x.dims() != shape {
        return Err(CoreError::tensor(
            name,
            format!("has shape {:?}, the config implies {:?}", x.dims(), shape),
        ));
    }
    Ok(x.to_device(dev)?.to_dtype(DType::F32)?)
}

impl Llama {
    /// Builds the model from HF-named tensors, checking every shape against the config.
    pub fn from_tensors(
        cfg: ModelConfig,
        mut t: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let i = cfg.intermediate_size;
        let qd = cfg.num_attention_heads * cfg.head_dim;
        let kvd = cfg.num_key_value_heads * cfg.head_dim;
        let embed = take(
            &mut t,
            "model.embed_tokens.weight",
            &[cfg.vocab_size, h],
            device,
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut proj = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Projection> {
                let weight = take(&mut t, &format!("{p}.{name}.weight"), &[out, inp], device)?;
                let bias = if bias {
                    Some(take(&mut t, &format!("{p}.{name}.bias"), &[out], device)?)
                } else {
                    None
                };
                Ok(Projection { weight, bias })
            };
            let ab = cfg.attention_bias;
            let layer = Layer {
                q: proj("self_attn.q_proj", qd, h, ab)?,
                k: proj("self_attn.k_proj", kvd, h, ab)?,
                v: proj("self_attn.v_proj", kvd, h, ab)?,
                o: proj("self_attn.o_proj", h, qd, false)?,
                gate: proj("mlp.gate_proj", i, h, false)?,
                up: proj("mlp.up_proj", i, h, false)?,
                down: proj("mlp.down_proj", h, i, false)?,
                input_norm: take(&mut t, &format!("{p}.input_layernorm.weight"), &[h], device)?,
                post_norm: take(
                    &mut t,
                    &format!("{p}.post_attention_layernorm.weight"),
                    &[h],
                    device,
                )?,
            };
            layers.push(layer);
        }
        let norm = take(&mut t, "model.norm.weight", &[h], device)?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            take(&mut t, "lm_head.weight", &[cfg.vocab_size, h], device)?
        };
        let inv_freq = cfg.rope_inv_freq();
        let half = inv_freq.len();
        let max_pos = cfg.max_position_embeddings;
        let inv = Tensor::from_vec(inv_freq, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_pos as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Llama {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            device: device.clone(),
        })
    }

    /// The first weight holding NaN or Inf, by its HF name: weights are checked when read
    /// from a file, so this only finds what was built in memory; it lets a non-finite loss be
    /// traced to its cause before the learning rate is blamed.
    pub fn first_non_finite(&self) -> Result<Option<(String, super::finite::NonFinite)>> {
        let mut named: Vec<(String, &Tensor)> = vec![
            ("model.embed_tokens.weight".into(), &self.embed),
            ("model.norm.weight".into(), &self.norm),
            ("lm_head.weight".into(), &self.lm_head),
        ];
        for (l, layer) in self.layers.iter().enumerate() {
            for m in crate::lora::ALL_MODULES {
                let p = layer.projection(m);
                let base = format!("model.layers.{l}.{}.{}", m.block(), m.hf_name());
                named.push((format!("{base}.weight"), &p.weight));
                if let Some(b) = &p.bias {
                    named.push((format!("{base}.bias"), b));
                }
            }
            named.push((
                format!("model.layers.{l}.input_layernorm.weight"),
                &layer.input_norm,
            ));
            named.push((
                format!("model.layers.{l}.post_attention_layernorm.weight"),
                &layer.post_norm,
            ));
        }
        for (name, t) in named {
            let c = super::finite::non_finite(t)?;
            if !c.is_clean() {
                return Ok(Some((name, c)));
            }
        }
        Ok(None)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the frozen weights and activations (adapters stay f32 master weights).
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// The same model with its frozen weights and activations in `dtype` (bf16 or f16 on a
    /// GPU). Logits come back as f32, so the loss computes in f32; rms_norm's backward does too.
    pub fn to_dtype(mut self, dtype: DType) -> Result<Self> {
        let cast = |t: &mut Tensor| -> Result<()> {
            *t = t.to_dtype(dtype)?;
            Ok(())
        };
        cast(&mut self.embed)?;
        cast(&mut self.lm_head)?;
        cast(&mut self.norm)?;
        cast(&mut self.cos)?;
        cast(&mut self.sin)?;
        for layer in &mut self.layers {
            for m in crate::lora::ALL_MODULES {
                let p = layer.projection_mut(m);
                cast(&mut p.weight)?;
                if let Some(b) = &mut p.bias {
                    cast(b)?;
                }
            }
            cast(&mut layer.input_norm)?;
            cast(&mut layer.post_norm)?;
        }
        Ok(self)
    }

    /// The model in the precision a job asks for. bf16 on the CPU keeps f32 activations beside
    /// bf16 frozen weights ([`Llama::with_frozen_bf16`]): candle has no bf16 product there.
    pub fn with_precision(self, precision: crate::device::Precision) -> Result<Self> {
        match precision {
            crate::device::Precision::Bf16 if self.device.is_cpu() => self.with_frozen_bf16(),
            p => self.to_dtype(p.dtype()),
        }
    }

    /// The same model with its frozen projections and lm_head in bf16 and everything else
    /// (embeddings, norms, activations, adapters) in f32: `--dtype bf16` on the CPU, where
    /// candle has no bf16 product. Generation streams half the bytes per token through
    /// [`super::linear::matmul_t`]; training widens each weight where it multiplies.
    pub fn with_frozen_bf16(mut self) -> Result<Self> {
        self.lm_head = super::linear::to_frozen_bf16(&self.lm_head)?;
        for layer in &mut self.layers {
            for m in crate::lora::ALL_MODULES {
                let p = layer.projection_mut(m);
                p.weight = super::linear::to_frozen_bf16(&p.weight)?;
            }
        }
        Ok(self)
    }

    /// The dtype of the frozen projections' weights: bf16 after [`Llama::with_frozen_bf16`]
    /// while [`Llama::dtype`] (the activations') stays f32.
    pub fn weight_dtype(&self) -> DType {
        self.lm_head.dtype()
    }

    /// (out, in) of a projection kind, for building adapters.
    pub fn projection_shape(&self, m: Module) -> (usize, usize) {
        let p = self.layers[0].projection(m);
        (p.out_features(), p.in_features())
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// ids: (b, s) u32 → logits (b, s, vocab), or (b, 1, vocab) with `last_only`.
    pub fn forward(
        &self,
        ids: &Tensor,
        input: &ForwardInput,
        cache: Option<&mut KvCache>,
        stack: &AdapterStack,
        mode: Mode,
    ) -> Result<Tensor> {
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let frame = self.frame(ids, input, past)?;
        let mut x = self.embed(ids)?;
        let mut cache = cache;
        for l in 0..self.layers.len() {
            let entry = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            x = self.layer_forward(l, &x, &frame, stack, mode, entry)?;
        }
        self.head(&x, input, mode)
    }

    /// The rotary tables and mask of a call on `ids` (b, s) after `past` cached positions.
    pub fn frame(&self, ids: &Tensor, input: &ForwardInput, past: usize) -> Result<Frame> {
        let (b, s) = ids.dims2()?;
        let total = past + s;
        if total > self.cfg.max_position_embeddings {
            return Err(CoreError::TooLong {
                tokens: total,
                limit: self.cfg.max_position_embeddings,
            });
        }
        // positions: (b, s)
        let positions = match &input.positions {
            Some(p) => p.clone(),
            None => Tensor::arange(past as u32, total as u32, &self.device)?
                .unsqueeze(0)?
                .repeat((b, 1))?,
        };
        let flat = positions.flatten_all()?;
        let half = self.cfg.head_dim / 2;
        Ok(Frame {
            cos: self.cos.index_select(&flat, 0)?.reshape((b, s, half))?,
            sin: self.sin.index_select(&flat, 0)?.reshape((b, s, half))?,
            mask: self.attention_mask(b, s, past, input.key_mask.as_ref())?,
            causal: past == 0 && s > 1,
        })
    }

    /// ids: (b, s) → the embeddings (b, s, hidden).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        Ok(self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            s,
            self.cfg.hidden_size,
        ))?)
    }

    /// One decoder layer on the residual stream x: (b, s, hidden).
    pub fn layer_forward(
        &self,
        l: usize,
        x: &Tensor,
        frame: &Frame,
        stack: &AdapterStack,
        mode: Mode,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        self.layer(l, x, frame, stack, mode, cache, None)
    }

    /// Training's forward of one layer without a graph, recording in the tape what
    /// [`Llama::layer_backward`] needs (with the same dropout masks as `mode`).
    pub fn layer_forward_taped(
        &self,
        l: usize,
        x: &Tensor,
        frame: &Frame,
        stack: &AdapterStack,
        mode: Mode,
    ) -> Result<(Tensor, LayerTape)> {
        let mut tape = LayerTape::default();
        let y = self.layer(
            l,
            x,
            frame,
            stack,
            mode.without_graph(),
            None,
            Some(&mut tape),
        )?;
        Ok((y, tape))
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        l: usize,
        x: &Tensor,
        frame: &Frame,
        stack: &AdapterStack,
        mode: Mode,
        cache: Option<&mut LayerCache>,
        mut tape: Option<&mut LayerTape>,
    ) -> Result<Tensor> {
        let layer = &self.layers[l];
        let ctx = LayerCtx {
            layer: l,
            stack,
            mode,
        };
        let eps = self.cfg.rms_norm_eps;
        let h = rms_norm(x, &layer.input_norm, eps, mode)?;
        let h = self.attention(&h, layer, &ctx, frame, cache, tape.as_deref_mut())?;
        let x2 = (x + h)?;
        let h = rms_norm(&x2, &layer.post_norm, eps, mode)?;
        let gate = project(
            &h,
            &layer.gate,
            Module::Gate,
            &ctx,
            lora_slot(&mut tape, Module::Gate),
        )?;
        let up = project(
            &h,
            &layer.up,
            Module::Up,
            &ctx,
            lora_slot(&mut tape, Module::Up),
        )?;
        let act = if mode.differentiable() {
            (gate.silu()? * &up)?
        } else {
            super::fused::swiglu(&gate, &up)?
        };
        let h = project(
            &act,
            &layer.down,
            Module::Down,
            &ctx,
            lora_slot(&mut tape, Module::Down),
        )?;
        if let Some(t) = tape {
            t.x = Some(x.clone());
            t.x2 = Some(x2.clone());
            t.gate = Some(gate);
            t.up = Some(up);
        }
        Ok((x2 + h)?)
    }

    /// The final norm and the lm_head on the positions `input` asks for (rows, last or all).
    pub fn head(&self, x: &Tensor, input: &ForwardInput, mode: Mode) -> Result<Tensor> {
        let (b, s, hidden) = x.dims3()?;
        let x = match (&input.rows, input.last_only) {
            (Some(rows), _) => x
                .reshape((b * s, hidden))?
                .index_select(rows, 0)?
                .unsqueeze(0)?,
            (None, true) => x.i((.., s - 1..s, ..))?,
            (None, false) => x.clone(),
        };
        let x = rms_norm(&x, &self.norm, self.cfg.rms_norm_eps, mode)?;
        let (b2, s2, hd) = x.dims3()?;
        let x = x.reshape((b2 * s2, hd))?;
        let logits = if mode.differentiable() {
            ops::frozen_linear(&x, &self.lm_head)?
        } else {
            super::linear::matmul_t(&x, &self.lm_head)?
        };
        Ok(logits
            .to_dtype(DType::F32)?
            .reshape((b2, s2, self.cfg.vocab_size))?)
    }

    /// Additive mask (b, 1, s, past + s): causal, plus padded keys masked out.
    fn attention_mask(
        &self,
        b: usize,
        s: usize,
        past: usize,
        key_mask: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let total = past + s;
        let causal = if s > 1 {
            let m: Vec<f32> = (0..s)
                .flat_map(|i| (0..total).map(move |j| if j > past + i { MASKED } else { 0.0 }))
                .collect();
            Some(Tensor::from_vec(m, (1, 1, s, total), &self.device)?)
        } else {
            None
        };
        let pad = match key_mask {
            Some(km) => {
                if km.dims() != [b, total] {
                    return Err(CoreError::tensor(
                        "key mask",
                        format!("has shape {:?}, expected ({b}, {total})", km.dims()),
                    ));
                }
                // 1 → 0, 0 → MASKED
                let add = ((km.to_dtype(DType::F32)? - 1.0)? * (-MASKED as f64))?;
                Some(add.reshape((b, 1, 1, total))?)
            }
            None => None,
        };
        let mask = match (causal, pad) {
            (Some(c), Some(p)) => Some(c.broadcast_add(&p)?),
            (c, p) => c.or(p),
        };
        // f16 cannot hold -1e30: clamp to its range before the cast.
        let dtype = self.dtype();
        mask.map(|m| -> Result<Tensor> {
            let m = if dtype == DType::F16 {
                m.maximum(-6e4)?
            } else {
                m
            };
            Ok(m.to_dtype(dtype)?)
        })
        .transpose()
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        x: &Tensor,
        layer: &Layer,
        ctx: &LayerCtx,
        frame: &Frame,
        cache: Option<&mut LayerCache>,
        mut tape: Option<&mut LayerTape>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let nh = self.cfg.num_attention_heads;
        let nkv = self.cfg.num_key_value_heads;
        let d = self.cfg.head_dim;
        let rep = nh / nkv;
        // q: (b, nh, s, d); k, v: (b, nkv, s, d)
        let q = project(x, &layer.q, Module::Q, ctx, lora_slot(&mut tape, Module::Q))?
            .reshape((b, s, nh, d))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = project(x, &layer.k, Module::K, ctx, lora_slot(&mut tape, Module::K))?
            .reshape((b, s, nkv, d))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = project(x, &layer.v, Module::V, ctx, lora_slot(&mut tape, Module::V))?
            .reshape((b, s, nkv, d))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = rope(&q, &frame.cos, &frame.sin, ctx.mode)?;
        let k = rope(&k, &frame.cos, &frame.sin, ctx.mode)?;
        let (shared, k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.own.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                slot.own = Some((k.clone(), v.clone()));
                (slot.shared.clone(), k, v)
            }
            None => (None, k, v),
        };
        if shared.is_some() && tape.is_some() {
            return Err(CoreError::Internal(
                "a shared prefix cache cannot be used while training".into(),
            ));
        }
        let t = k.dims()[2];
        // Grouped-query attention without copying keys: the rep query heads of one kv head
        // are stacked along the sequence axis. q5: (b, nkv, rep * s, d)
        let q5 = q.reshape((b, nkv, rep * s, d))?;
        // Without cached positions, the blocked causal kernel skips the masked half (on the
        // CPU in f32, outside training's reference path).
        let causal = match &frame.mask {
            Some(mask)
                if frame.causal && !ctx.mode.differentiable() && shared.is_none() && t == s =>
            {
                let scale = 1.0 / (d as f64).sqrt();
                super::attention::causal_forward(&q5, &k, &v, mask, scale)?
            }
            _ => None,
        };
        let (probs, out) = match causal {
            Some(done) => done,
            None => self.plain_attention(&q5, &k, &v, shared.as_ref(), frame, ctx.mode)?,
        };
        // (b, nh, s, d) → (b, s, nh * d)
        let out = out
            .reshape((b, nh, s, d))?
            .transpose(1, 2)?
            .reshape((b, s, nh * d))?;
        let y = project(
            &out,
            &layer.o,
            Module::O,
            ctx,
            lora_slot(&mut tape, Module::O),
        )?;
        if let Some(t) = tape {
            t.q = Some(q);
            t.k = Some(k);
            t.v = Some(v);
            t.probs = Some(probs);
            t.attn = Some(out);
        }
        Ok(y)
    }

    /// Attention's scores, softmax and product with the values in full: q5 (b, nkv, rep · s,
    /// d) against a shared prefix's keys and values (if any) and this call's k, v (b, nkv, t,
    /// d). Returns (probs (b, nkv, rep, s, p + t), out (b, nkv, rep · s, d)).
    fn plain_attention(
        &self,
        q5: &Tensor,
        k: &Tensor,
        v: &Tensor,
        shared: Option<&(Tensor, Tensor)>,
        frame: &Frame,
        mode: Mode,
    ) -> Result<(Tensor, Tensor)> {
        let (b, nkv, rows, d) = q5.dims4()?;
        let t = k.dims()[2];
        let rep = self.cfg.num_attention_heads / nkv;
        let s = rows / rep;
        let p = shared.map_or(0, |(pk, _)| pk.dims()[2]);
        let scale = 1.0 / (d as f64).sqrt();
        // The graph's products for training's reference path; elsewhere the batch of small
        // products is split over threads.
        let mm = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
            if mode.differentiable() {
                Ok(a.matmul(b)?)
            } else {
                super::products::batched_matmul(a, b)
            }
        };
        // scores: (b, nkv, rep, s, p + t), the shared prefix's columns first; mask:
        // (b, 1, 1, s, p + t)
        let own_scores = mm(q5, &k.t()?)?;
        let scores = match shared {
            Some((pk, _)) => {
                let ps = shared_product(q5, &pk.t()?)?;
                Tensor::cat(&[&ps, &own_scores], 3)?
            }
            None => own_scores,
        }
        .reshape((b, nkv, rep, s, p + t))?;
        let mask = frame.mask.as_ref().map(|m| m.unsqueeze(1)).transpose()?;
        let probs = if mode.differentiable() {
            ops::masked_softmax(&scores, mask.as_ref(), scale)?
        } else {
            super::fused::masked_softmax(&scores, mask.as_ref(), scale)?
        };
        let flat = probs.reshape((b, nkv, rep * s, p + t))?;
        let out = match shared {
            Some((_, pv)) => {
                let own = mm(&flat.narrow(3, p, t)?, v)?;
                (shared_product(&flat.narrow(3, 0, p)?, pv)? + own)?
            }
            None => mm(&flat, v)?,
        };
        Ok((probs, out))
    }
}

/// x: (b, h, r, c) times y: (1, h, c, e), the same y for every batch row → (b, h, r, e),
/// as one product per head with the batch's rows stacked (a shared prefix's keys or values
/// read once for the whole batch).
fn shared_product(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (b, h, r, c) = x.dims4()?;
    let e = y.dims()[3];
    let stacked = x.transpose(0, 1)?.contiguous()?.reshape((h, b * r, c))?;
    Ok(stacked
        .matmul(&y.squeeze(0)?)?
        .reshape((h, b, r, e))?
        .transpose(0, 1)?)
}

struct LayerCtx<'a> {
    layer: usize,
    stack: &'a AdapterStack,
    mode: Mode,
}

/// x: (b, s, in) → (b, s, out): the frozen projection plus every adapter of the stack. With a
/// tape, each adapter's x Aᵀ (b·s, r) is recorded for the backward.
fn project(
    x: &Tensor,
    p: &Projection,
    m: Module,
    ctx: &LayerCtx,
    mut tape: Option<&mut Vec<Tensor>>,
) -> Result<Tensor> {
    let (b, s, n_in) = x.dims3()?;
    let x2 = x.reshape((b * s, n_in))?;
    if !ctx.mode.differentiable() && b * s > super::linear::STREAM_MAX_ROWS {
        return Ok(project_many_rows(&x2, p, m, ctx, tape)?.reshape((b, s, p.out_features()))?);
    }
    let mut y = if ctx.mode.differentiable() {
        ops::frozen_linear(&x2, &p.weight)?
    } else {
        super::linear::matmul_t(&x2, &p.weight)?
    };
    if let Some(bias) = &p.bias {
        y = y.broadcast_add(bias)?;
    }
    for (pair, coef) in ctx.stack.at(ctx.layer, m)? {
        let xin = match ctx.mode.lora_dropout(ctx.layer, m) {
            Some((p, seed)) => super::dropout::apply(&x2, p, seed)?,
            None => x2.clone(),
        };
        // (b*s, in) → (b*s, r) → (b*s, out). A and B are f32 master weights: the cast to the
        // activations' dtype is part of the graph, so their gradients come back as f32. The
        // factors and learned CAT weights join the graph only where one is kept: a forward
        // without one must not hold every activation alive through them.
        let dt = x2.dtype();
        let (a, b) = if ctx.mode.differentiable() {
            (pair.a.clone(), pair.b.clone())
        } else {
            (pair.a.detach(), pair.b.detach())
        };
        let u = xin.matmul(&a.to_dtype(dt)?.t()?)?;
        let d = u.matmul(&b.to_dtype(dt)?.t()?)?;
        if let Some(t) = tape.as_deref_mut() {
            t.push(u);
        }
        y = match coef {
            Coefficient::Const(c) => (y + (d * c)?)?,
            Coefficient::Tensor(c) => {
                let c = if ctx.mode.differentiable() {
                    c
                } else {
                    c.detach()
                };
                (y + d.broadcast_mul(&c.to_dtype(dt)?)?)?
            }
        };
    }
    Ok(y.reshape((b, s, p.out_features()))?)
}

/// [`project`] without a graph on many rows (a prompt's prefill, training's forward), x:
/// (n, in) → (n, out): each adapter's product is added into the frozen one's buffer, with its
/// coefficient applied to x Aᵀ (n, r) rather than to its (n, out) output.
fn project_many_rows(
    x: &Tensor,
    p: &Projection,
    m: Module,
    ctx: &LayerCtx,
    mut tape: Option<&mut Vec<Tensor>>,
) -> Result<Tensor> {
    let dt = x.dtype();
    let mut y = ProductSum::new(x, &p.weight.to_dtype(dt)?.t()?)?;
    for (pair, coef) in ctx.stack.at(ctx.layer, m)? {
        let xin = match ctx.mode.lora_dropout(ctx.layer, m) {
            Some((p, seed)) => super::dropout::apply(x, p, seed)?,
            None => x.clone(),
        };
        // (n, in) → (n, r)
        let u = xin.matmul(&pair.a.detach().to_dtype(dt)?.t()?)?;
        let b = pair.b.detach().to_dtype(dt)?;
        match coef {
            Coefficient::Const(c) => y.add(&u, &b.t()?, c)?,
            Coefficient::Tensor(c) => {
                let uc = u.broadcast_mul(&c.detach().to_dtype(dt)?)?;
                y.add(&uc, &b.t()?, 1.0)?
            }
        }
        if let Some(t) = tape.as_deref_mut() {
            t.push(u);
        }
    }
    let y = y.finish()?;
    Ok(match &p.bias {
        Some(bias) => y.broadcast_add(bias)?,
        None => y,
    })
}

/// Where a taped forward records the adapters' inputs of module `m`.
fn lora_slot<'a>(tape: &'a mut Option<&mut LayerTape>, m: Module) -> Option<&'a mut Vec<Tensor>> {
    tape.as_deref_mut().map(|t| &mut t.lora[m.index()])
}

/// x: (..., hidden). The fused kernel, with a hand-written backward when training.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    if mode.differentiable() {
        return ops::rms_norm(x, w, eps);
    }
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
}

/// x: (b, h, s, d); cos, sin: (b, s, d/2). HF's rotate-half layout.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    if mode.differentiable() {
        return ops::rope(x, cos, sin);
    }
    Ok(candle_nn::rotary_emb::rope(
        x,
        &cos.contiguous()?,
        &sin.contiguous()?,
    )?)
}
