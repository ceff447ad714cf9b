//! The training loop shared by LoRA fine-tuning and CAT: micro-batches, gradient accumulation,
//! clipping, schedule, validation, checkpoints, resume, cancellation and progress events.
//!
//! What is trained is a [`Trainable`]: a set of variables and the adapter stack built from
//! them. The data order is a pure function of the seed and the epoch, so a resumed run
//! replays exactly the batches the uninterrupted run would have seen.

use super::batch::{eval_loss, loss_and_grads, make_batches, TrainSeq};
use super::optim::{clip_grad_norm, lr_at, AdamW, AdamWParams, Decay};
use crate::error::{CoreError, Result};
use crate::lora::AdapterStack;
use crate::model::backward::add_grad;
use crate::model::{Llama, Mode};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Something with trainable variables that becomes an adapter stack.
pub trait Trainable {
    fn vars(&self) -> Vec<Var>;
    /// The stack for one forward; rebuilt every step since it may be a function of the vars.
    fn stack(&self) -> Result<AdapterStack>;
}

/// Hyper-parameters of the loop itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of the optimizer steps spent warming up.
    pub warmup_ratio: f64,
    pub decay: Decay,
    /// 0 disables clipping.
    pub max_grad_norm: f64,
    pub dropout: f32,
    pub seed: u64,
    /// Validation every N optimizer steps (0: only at the end).
    pub eval_every: usize,
    /// Checkpoint every N optimizer steps (0: never, except on cancel).
    pub checkpoint_every: usize,
    /// Stop after this many optimizer steps (for smoke runs and tests).
    pub max_steps: Option<usize>,
    /// Take at least this many optimizer steps, with further passes over the data as needed
    /// (CAT: a small sample is otherwise a dozen steps, too few for its coefficients to move).
    /// `max_steps` still caps it. Not written when 0, so specs from before it read the same.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_steps: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            epochs: 3,
            batch_size: 8,
            grad_accum: 1,
            lr: 3e-4,
            weight_decay: 0.0,
            warmup_ratio: 0.03,
            decay: Decay::Linear,
            max_grad_norm: 1.0,
            dropout: 0.05,
            seed: 42,
            eval_every: 0,
            checkpoint_every: 50,
            max_steps: None,
            min_steps: 0,
        }
    }
}

/// Progress of a training job, sent as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrainEvent {
    Started {
        total_steps: usize,
        resumed_from: usize,
    },
    Step {
        step: usize,
        total_steps: usize,
        epoch: usize,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_s: f64,
        eta_s: f64,
    },
    Validation {
        step: usize,
        val_loss: f64,
    },
    Checkpoint {
        step: usize,
    },
}

/// Cancellation and progress plumbing handed to a running job.
#[derive(Clone, Default)]
pub struct JobControl {
    pub cancel: Arc<AtomicBool>,
}

impl JobControl {
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// What a finished (or cancelled) loop reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub total_steps: usize,
    pub final_train_loss: f64,
    pub final_val_loss: Option<f64>,
    pub loss_curve: Vec<(u64, f32)>,
    pub val_curve: Vec<(u64, f32)>,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub resumed_from: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointMeta {
    step: usize,
    adam_step: u64,
    loss_curve: Vec<(u64, f32)>,
    val_curve: Vec<(u64, f32)>,
    seconds: f64,
}

/// The micro-batches (indices into the training set) of every optimizer step, in order:
/// `epochs` passes, then more (each its own shuffle) until there are `min_steps`.
fn plan(train: &[TrainSeq], cfg: &LoopConfig) -> Vec<(usize, Vec<Vec<usize>>)> {
    let lens: Vec<usize> = train.iter().map(|s| s.ids.len()).collect();
    let mut steps = Vec::new();
    let mut epoch = 0;
    while epoch < cfg.epochs || (steps.len() < cfg.min_steps && !train.is_empty()) {
        let batches = make_batches(
            train.len(),
            &lens,
            cfg.batch_size,
            cfg.seed ^ ((epoch as u64 + 1) * 0x9E37),
        );
        for group in batches.chunks(cfg.grad_accum.max(1)) {
            steps.push((epoch, group.to_vec()));
        }
        epoch += 1;
    }
    if epoch > cfg.epochs {
        // The passes added for min_steps end at min_steps, not at the end of a pass.
        steps.truncate(cfg.min_steps);
    }
    if let Some(m) = cfg.max_steps {
        steps.truncate(m);
    }
    steps
}

/// Runs the loop. With `ckpt_dir`, resumes from the checkpoint there if one exists, and writes
/// checkpoints at intervals and when cancelled.
#[allow(clippy::too_many_arguments)]
pub fn train_loop(
    model: &Llama,
    trainable: &dyn Trainable,
    train: &[TrainSeq],
    val: &[TrainSeq],
    cfg: &LoopConfig,
    ckpt_dir: Option<&Path>,
    ctl: &JobControl,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainSummary> {
    if train.is_empty() {
        return Err(CoreError::NoTrainingData("no training examples"));
    }
    let vars = trainable.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWParams {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let steps = plan(train, cfg);
    let total = steps.len();
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;
    let mut meta = CheckpointMeta::default();
    if let Some(dir) = ckpt_dir {
        if let Some(m) = load_checkpoint(dir, &vars, &mut opt)? {
            meta = m;
        }
    }
    let start_step = meta.step;
    let seconds_before = meta.seconds;
    on_event(TrainEvent::Started {
        total_steps: total,
        resumed_from: start_step,
    });
    let t0 = Instant::now();
    let mut tokens_now = 0usize;
    let mut last_loss = meta
        .loss_curve
        .last()
        .map(|(_, l)| *l as f64)
        .unwrap_or(f64::NAN);
    for (step, (epoch, group)) in steps.iter().enumerate().skip(start_step) {
        if ctl.is_cancelled() {
            if let Some(dir) = ckpt_dir {
                save_checkpoint(dir, &vars, &opt, &meta)?;
            }
            return Err(CoreError::Cancelled);
        }
        let n_targets: usize = group.iter().flatten().map(|&i| train[i].n_targets()).sum();
        if n_targets == 0 {
            continue;
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut loss_sum = 0f64;
        for (micro, batch) in group.iter().enumerate() {
            let refs: Vec<&TrainSeq> = batch.iter().map(|&i| &train[i]).collect();
            if refs.iter().all(|s| s.n_targets() == 0) {
                continue;
            }
            let stack = trainable.stack()?;
            let mode = Mode::Train {
                dropout: cfg.dropout,
                seed: cfg.seed ^ ((step as u64) << 20) ^ ((micro as u64) << 4),
            };
            let w = refs.iter().map(|s| s.n_targets()).sum::<usize>() as f64 / n_targets as f64;
            let out = loss_and_grads(model, &stack, &refs, mode, &vars, w)?;
            tokens_now += out.tokens;
            let lv = out.loss;
            if !lv.is_finite() {
                return Err(explain_non_finite_loss(
                    model,
                    &stack,
                    &vars,
                    lv as f64,
                    step,
                    step == start_step,
                    (ckpt_dir.is_some() && meta.step > 0).then_some(meta.step),
                ));
            }
            loss_sum += lv * w;
            for (acc, gi) in grads.iter_mut().zip(out.grads) {
                if let Some(gi) = gi {
                    add_grad(acc, gi)?;
                }
            }
        }
        let grad_norm = clip_grad_norm(&mut grads, cfg.max_grad_norm)?;
        let lr = lr_at(cfg.lr, step, total, warmup, cfg.decay);
        opt.step(&grads, lr)?;
        last_loss = loss_sum;
        meta.step = step + 1;
        meta.adam_step = opt.step;
        meta.loss_curve.push((meta.step as u64, loss_sum as f32));
        let elapsed = t0.elapsed().as_secs_f64();
        let tps = tokens_now as f64 / elapsed.max(1e-9);
        let per_step = elapsed / (meta.step - start_step) as f64;
        on_event(TrainEvent::Step {
            step: meta.step,
            total_steps: total,
            epoch: *epoch,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens_per_s: tps,
            eta_s: per_step * (total - meta.step) as f64,
        });
        if cfg.eval_every > 0
            && meta.step % cfg.eval_every == 0
            && !val.is_empty()
            && meta.step < total
        {
            let vl = eval_loss(model, &trainable.stack()?, val, cfg.batch_size)?;
            meta.val_curve.push((meta.step as u64, vl as f32));
            on_event(TrainEvent::Validation {
                step: meta.step,
                val_loss: vl,
            });
        }
        if let Some(dir) = ckpt_dir {
            if cfg.checkpoint_every > 0
                && meta.step % cfg.checkpoint_every == 0
                && meta.step < total
            {
                meta.seconds = seconds_before + elapsed;
                save_checkpoint(dir, &vars, &opt, &meta)?;
                on_event(TrainEvent::Checkpoint { step: meta.step });
            }
        }
    }
    let final_val = if val.is_empty() {
        None
    } else {
        let vl = eval_loss(model, &trainable.stack()?, val, cfg.batch_size)?;
        meta.val_curve.push((meta.step as u64, vl as f32));
        on_event(TrainEvent::Validation {
            step: meta.step,
            val_loss: vl,
        });
        Some(vl)
    };
    let seconds = t0.elapsed().as_secs_f64();
    Ok(TrainSummary {
        steps: meta.step,
        total_steps: total,
        final_train_loss: last_loss,
        final_val_loss: final_val,
        loss_curve: meta.loss_curve,
        val_curve: meta.val_curve,
        seconds: seconds_before + seconds,
        tokens_per_s: tokens_now as f64 / seconds.max(1e-9),
        resumed_from: start_step,
    })
}

fn ckpt_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join("checkpoint.safetensors"),
        dir.join("checkpoint.json"),
    )
}

/// Writes variables, optimizer moments and loop state; both files go through a rename so a
/// kill mid-write leaves the previous checkpoint intact.
fn save_checkpoint(dir: &Path, vars: &[Var], opt: &AdamW, meta: &CheckpointMeta) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    let (m, v) = opt.moments();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, var) in vars.iter().enumerate() {
        tensors.insert(format!("var.{i}"), var.as_tensor().clone());
        tensors.insert(format!("m.{i}"), m[i].clone());
        tensors.insert(format!("v.{i}"), v[i].clone());
    }
    let (st, js) = ckpt_paths(dir);
    let tmp_st = dir.join("checkpoint.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp_st)
        .map_err(|e| CoreError::bad_file(&tmp_st, e.to_string()))?;
    let tmp_js = dir.join("checkpoint.json.tmp");
    let text =
        serde_json::to_string(meta).map_err(|e| CoreError::serialize("the checkpoint meta", e))?;
    std::fs::write(&tmp_js, text).map_err(|e| CoreError::io(&tmp_js, e))?;
    // The tensors first: a kill between the renames leaves new tensors with old meta, which
    // load_checkpoint detects through the step recorded in both.
    std::fs::rename(&tmp_st, &st).map_err(|e| CoreError::io(&st, e))?;
    std::fs::rename(&tmp_js, &js).map_err(|e| CoreError::io(&js, e))?;
    Ok(())
}

/// Why the loss became NaN or Inf, so the advice fits the cause. Only divergence (finite
/// weights that updates drove to overflow) is cured by a lower learning rate; non-finite
/// frozen weights, or a forward that overflows before any update, are not.
#[allow(clippy::too_many_arguments)]
fn explain_non_finite_loss(
    model: &Llama,
    stack: &AdapterStack,
    vars: &[Var],
    loss: f64,
    step: usize,
    first_step: bool,
    checkpoint: Option<usize>,
) -> CoreError {
    let input = |cause: String| CoreError::NonFiniteLoss { loss, step, cause };
    match model.first_non_finite() {
        Ok(Some((name, c))) => {
            return input(format!(
                "the model's weight {name} holds {}: the model is damaged, re-download or re-convert it",
                c.describe()
            ))
        }
        Ok(None) => {}
        Err(e) => return e,
    }
    let var_tensors: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let is_var = |t: &Tensor| var_tensors.iter().any(|v| v.id() == t.id());
    for ad in &stack.adapters {
        for (&(layer, m), p) in &ad.pairs {
            for (which, t) in [("lora_A", &p.a), ("lora_B", &p.b)] {
                let bad = match crate::model::finite::non_finite(t) {
                    Ok(c) if !c.is_clean() => c,
                    Ok(_) => continue,
                    Err(e) => return e,
                };
                // A trained factor that went non-finite after updates is divergence.
                if is_var(t) && !first_step {
                    continue;
                }
                return input(format!(
                    "adapter {} layer {layer} {} {which} holds {} before this step's update: the adapter or the checkpoint it was resumed from is damaged",
                    ad.name,
                    m.hf_name(),
                    bad.describe()
                ));
            }
        }
    }
    if first_step {
        let vars_ok = var_tensors.iter().all(|t| {
            crate::model::finite::non_finite(t)
                .map(|c| c.is_clean())
                .unwrap_or(false)
        });
        return input(if vars_ok {
            format!(
                "it is not finite on the first step, before any update, with every weight finite: the forward pass overflows in {:?} on this batch (try --dtype f32, or check the adapters' alpha)",
                model.dtype()
            )
        } else {
            "the trainable weights hold NaN or Inf before any update: the checkpoint resumed from is damaged; start the run afresh".into()
        });
    }
    CoreError::Diverged {
        loss,
        step,
        checkpoint,
    }
}

fn load_checkpoint(dir: &Path, vars: &[Var], opt: &mut AdamW) -> Result<Option<CheckpointMeta>> {
    let (st, js) = ckpt_paths(dir);
    if !st.exists() || !js.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&js).map_err(|e| CoreError::io(&js, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| CoreError::bad_file(&js, format!("corrupt checkpoint: {e}")))?;
    let dev = vars
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let t = candle_core::safetensors::load(&st, &dev)
        .map_err(|e| CoreError::bad_file(&st, e.to_string()))?;
    let get = |name: String| {
        t.get(&name).cloned().ok_or_else(|| {
            CoreError::bad_file(
                &st,
                format!("checkpoint lacks {name}: it belongs to another job"),
            )
        })
    };
    let mut ms = Vec::new();
    let mut vs = Vec::new();
    for (i, var) in vars.iter().enumerate() {
        let val = get(format!("var.{i}"))?;
        if val.dims() != var.dims() {
            return Err(CoreError::bad_file(
                &st,
                format!(
                    "var.{i} has shape {:?}, expected {:?}",
                    val.dims(),
                    var.dims()
                ),
            ));
        }
        let (m, v) = (get(format!("m.{i}"))?, get(format!("v.{i}"))?);
        for (name, t) in [("var", &val), ("m", &m), ("v", &v)] {
            crate::model::load::check_finite(&st, &format!("{name}.{i}"), t)?;
        }
        var.set(&val)?;
        ms.push(m);
        vs.push(v);
    }
    opt.restore(ms, vs, meta.adam_step);
    Ok(Some(meta))
}

/// Removes a job's checkpoint once its result is safely stored.
pub fn clear_checkpoint(dir: &Path) -> Result<()> {
    let (st, js) = ckpt_paths(dir);
    for p in [st, js] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| CoreError::io(&p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(n: usize) -> Vec<TrainSeq> {
        (0..n)
            .map(|i| TrainSeq {
                ids: vec![1, 2, 3 + i as u32],
                target: vec![false, true, true],
            })
            .collect()
    }

    #[test]
    fn min_steps_repeats_the_data_and_stops_at_the_minimum() {
        let data = seqs(5);
        let cfg = |epochs, min_steps, max_steps| LoopConfig {
            epochs,
            batch_size: 2,
            min_steps,
            max_steps,
            ..Default::default()
        };
        // 5 examples at batch 2: 3 steps a pass.
        assert_eq!(plan(&data, &cfg(1, 0, None)).len(), 3);
        let steps = plan(&data, &cfg(1, 8, None));
        assert_eq!(steps.len(), 8);
        let epochs: Vec<usize> = steps.iter().map(|(e, _)| *e).collect();
        assert_eq!(epochs, [0, 0, 0, 1, 1, 1, 2, 2]);
        // Every pass sees every example once.
        let mut seen: Vec<usize> = steps[3..6].iter().flat_map(|(_, g)| g.concat()).collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        // A minimum below what the epochs give changes nothing; max_steps still caps.
        assert_eq!(plan(&data, &cfg(4, 5, None)).len(), 12);
        assert_eq!(plan(&data, &cfg(1, 8, Some(4))).len(), 4);
        // Written only when set, so older specs serialize as before.
        let json = serde_json::to_value(cfg(1, 0, None)).unwrap();
        assert!(json.get("min_steps").is_none(), "{json}");
        let back: LoopConfig =
            serde_json::from_value(serde_json::to_value(cfg(1, 8, None)).unwrap()).unwrap();
        assert_eq!(back.min_steps, 8);
    }
}
