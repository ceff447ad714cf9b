//! Gradients reach the adapters: against PyTorch+PEFT's gradients, and by finite differences
//! for A, B and the CAT weights (the fused kernels have no backward, so this would catch a
//! training path that silently uses them). Then the loop itself: memorization, and a resumed
//! run ending with the same adapter as an uninterrupted one.

use candle_core::{DType, Device, Tensor, Var};
use soup_core::lora::peft::load_peft;
use soup_core::lora::{AdapterStack, LoraAdapter, Module};
use soup_core::model::load::load_hf_weights;
use soup_core::model::{Llama, Mode};
use soup_core::train::batch::{batch_loss, loss_and_grads, loss_and_grads_keeping};
use soup_core::train::{
    train_loop, CatInit, CatParam, CatTrainable, JobControl, LoopConfig, LoraSpec, LoraTrainable,
    TrainEvent, TrainSeq, Trainable,
};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

const TRAIN: Mode = Mode::Train {
    dropout: 0.0,
    seed: 0,
};

fn fixture_batch() -> (Vec<TrainSeq>, std::collections::HashMap<String, Tensor>) {
    let t = candle_core::safetensors::load(fixtures().join("train-step.safetensors"), &Device::Cpu)
        .unwrap();
    let ids = t["input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let att = t["attention_mask"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let lm = t["loss_mask"]
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let seqs = (0..ids.len())
        .map(|r| {
            let n = att[r].iter().filter(|&&a| a == 1).count();
            TrainSeq {
                ids: ids[r][..n].to_vec(),
                target: lm[r][..n].iter().map(|&m| m > 0.5).collect(),
            }
        })
        .collect();
    (seqs, t)
}

fn model() -> Llama {
    load_hf_weights(&fixtures().join("tiny-llama"), &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn loss_and_gradients_match_pytorch_peft() {
    let model = model();
    let (seqs, refs) = fixture_batch();
    let adapter = load_peft(&fixtures().join("adapter-a"), &Device::Cpu).unwrap();
    let tr = LoraTrainable::from_adapter(adapter.clone()).unwrap();
    let refs_b: Vec<&TrainSeq> = seqs.iter().collect();
    let (loss, n, _) = batch_loss(&model, &tr.stack().unwrap(), &refs_b, TRAIN).unwrap();
    assert_eq!(n, 11);
    let l = loss.to_scalar::<f32>().unwrap();
    assert!((l - 6.341079).abs() < 1e-4, "loss {l}");
    let grads = loss.backward().unwrap();
    // vars come in (A, B) pairs in the adapter's (layer, module) order.
    let vars = tr.vars();
    // Training's path: activation checkpointing, with every layer recomputed (keep 0), the top
    // one kept from the forward (1), or both kept (2, plain backpropagation in pieces).
    let ck: Vec<_> = (0..=2)
        .map(|keep| {
            let stack = tr.stack().unwrap();
            let out =
                loss_and_grads_keeping(&model, &stack, &refs_b, TRAIN, &vars, 1.0, keep).unwrap();
            assert!(
                (out.loss as f32 - l).abs() < 1e-5,
                "keep {keep}: loss {}",
                out.loss
            );
            out
        })
        .collect();
    let mut checked = 0;
    for (i, (&(layer, m), _)) in adapter.pairs.iter().enumerate() {
        for (j, ab) in ["lora_A", "lora_B"].iter().enumerate() {
            let name = format!(
                "grad.base_model.model.model.layers.{layer}.{}.{}.{ab}.weight",
                m.block(),
                m.hf_name()
            );
            let want = &refs[&name];
            let full = grads
                .get(vars[2 * i + j].as_tensor())
                .expect("no gradient reached the adapter");
            let mut paths = vec![("full graph".to_string(), full)];
            for (keep, out) in ck.iter().enumerate() {
                let got = out.grads[2 * i + j]
                    .as_ref()
                    .expect("no checkpointed gradient reached the adapter");
                paths.push((format!("checkpointed, keep {keep}"), got));
            }
            for (path, got) in paths {
                let d = max_abs(&(got - want).unwrap());
                let scale = max_abs(want).max(1e-6);
                assert!(
                    d < 1e-4 + 1e-3 * scale,
                    "{name} ({path}): max abs diff {d} (grad scale {scale})"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
}

/// Central finite difference of the loss along one coordinate of `var`.
fn numeric_grad(loss_at: &dyn Fn() -> f32, var: &Var, index: usize, eps: f32) -> f32 {
    let orig = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let shape = var.as_tensor().shape().clone();
    let set = |delta: f32| {
        let mut v = orig.clone();
        v[index] += delta;
        var.set(&Tensor::from_vec(v, &shape, &Device::Cpu).unwrap())
            .unwrap();
    };
    set(eps);
    let plus = loss_at();
    set(-eps);
    let minus = loss_at();
    set(0.0);
    (plus - minus) / (2.0 * eps)
}

fn check_fd(tr: &dyn Trainable, model: &Llama, seqs: &[TrainSeq], which: &[usize]) {
    let refs: Vec<&TrainSeq> = seqs.iter().collect();
    let loss_at = || {
        batch_loss(model, &tr.stack().unwrap(), &refs, TRAIN)
            .unwrap()
            .0
            .to_scalar::<f32>()
            .unwrap()
    };
    // The analytic side is training's own path, every layer recomputed and accumulated.
    let vars = tr.vars();
    let grads = loss_and_grads_keeping(model, &tr.stack().unwrap(), &refs, TRAIN, &vars, 1.0, 0)
        .unwrap()
        .grads;
    for &vi in which {
        let g = grads[vi]
            .as_ref()
            .expect("no gradient")
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // The largest coordinates, where f32 finite differences are well above noise.
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        assert!(
            g[order[0]].abs() > 1e-4,
            "var {vi}: gradient is zero: it does not flow"
        );
        for &k in order.iter().take(3) {
            let num = numeric_grad(&loss_at, &vars[vi], k, 1e-2);
            let rel = (num - g[k]).abs() / g[k].abs().max(1e-3);
            assert!(rel < 0.05, "var {vi}[{k}]: analytic {} numeric {num}", g[k]);
        }
    }
}

#[test]
fn finite_differences_agree_for_a_b_and_cat_weights() {
    let model = model();
    let (seqs, _) = fixture_batch();
    let a = load_peft(&fixtures().join("adapter-a"), &Device::Cpu).unwrap();
    let b = load_peft(&fixtures().join("adapter-b"), &Device::Cpu).unwrap();
    let tr = LoraTrainable::from_adapter(a.clone()).unwrap();
    // A and B of layer 0 q_proj, and of layer 1 down_proj (the last pairs).
    let n = tr.vars().len();
    check_fd(&tr, &model, &seqs, &[0, 1, n - 2, n - 1]);
    for param in [CatParam::Softmax, CatParam::Free] {
        // At the default start (the plain concatenation) and at the paper's random one.
        for init in [CatInit::Uniform, CatInit::Normal] {
            let ads = vec![a.clone(), b.clone()];
            let cat = CatTrainable::new(ads, 2, param, init, 1, &Device::Cpu).unwrap();
            check_fd(&cat, &model, &seqs, &[0]);
        }
    }
}

fn toy_data(n: usize) -> Vec<TrainSeq> {
    // Short fixed "prompt → response" sequences over the tiny vocab.
    (0..n)
        .map(|i| {
            let p: Vec<u32> = vec![20, 30, 10 + i as u32];
            let r: Vec<u32> = vec![100 + (i as u32 * 7) % 50, 150 + i as u32, 60];
            let ids: Vec<u32> = p.iter().chain(r.iter()).copied().collect();
            let target = (0..ids.len()).map(|t| t >= p.len()).collect();
            TrainSeq { ids, target }
        })
        .collect()
}

#[test]
fn lora_memorizes_a_small_set() {
    let model = model();
    let data = toy_data(8);
    let spec = LoraSpec {
        rank: 8,
        alpha: 16.0,
        use_rslora: false,
        targets: soup_core::lora::ALL_MODULES.to_vec(),
    };
    let tr = LoraTrainable::new(&model, "mem", "tiny-llama", &spec, 1, 0.0).unwrap();
    let cfg = LoopConfig {
        epochs: 100,
        batch_size: 4,
        lr: 3e-3,
        dropout: 0.0,
        warmup_ratio: 0.0,
        decay: soup_core::train::optim::Decay::Constant,
        ..Default::default()
    };
    let mut first = None;
    let s = train_loop(
        &model,
        &tr,
        &data,
        &data[..2],
        &cfg,
        None,
        &JobControl::default(),
        &mut |e| {
            if let TrainEvent::Step { loss, .. } = e {
                first.get_or_insert(loss);
            }
        },
    )
    .unwrap();
    let first = first.unwrap();
    assert!(first > 4.0, "initial loss {first}");
    // The tiny random model's tied lm_head bounds how peaked its logits can get, so the loss
    // cannot reach 0; memorized means every response token is the argmax.
    assert!(
        s.final_train_loss < first / 2.5,
        "loss only fell from {first} to {}",
        s.final_train_loss
    );
    let stack = tr.stack().unwrap();
    for seq in &data {
        let ids = Tensor::new(seq.ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model
            .forward(&ids, &Default::default(), None, &stack, Mode::Infer)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        for t in 3..seq.ids.len() {
            assert_eq!(
                logits[t - 1],
                seq.ids[t],
                "sequence {:?} position {t}",
                seq.ids
            );
        }
    }
}

fn final_adapter(tr: &LoraTrainable) -> LoraAdapter {
    tr.adapter().unwrap()
}

#[test]
fn resumed_run_ends_with_the_same_adapter() {
    let model = model();
    let data = toy_data(12);
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        use_rslora: false,
        targets: vec![Module::Q, Module::Down],
    };
    let cfg = LoopConfig {
        epochs: 3,
        batch_size: 3,
        grad_accum: 2,
        lr: 5e-3,
        dropout: 0.1,
        checkpoint_every: 2,
        ..Default::default()
    };

    let whole = LoraTrainable::new(&model, "x", "tiny", &spec, 5, 0.1).unwrap();
    train_loop(
        &model,
        &whole,
        &data,
        &[],
        &cfg,
        None,
        &JobControl::default(),
        &mut |_| {},
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ctl = JobControl::default();
    let first = LoraTrainable::new(&model, "x", "tiny", &spec, 5, 0.1).unwrap();
    let c2 = ctl.clone();
    let err = train_loop(
        &model,
        &first,
        &data,
        &[],
        &cfg,
        Some(dir.path()),
        &ctl,
        &mut |e| {
            if let TrainEvent::Step { step: 3, .. } = e {
                c2.cancel.store(true, Ordering::Relaxed);
            }
        },
    )
    .unwrap_err();
    assert!(matches!(err, soup_core::CoreError::Cancelled));
    // A new process would start from a fresh init; the checkpoint restores everything.
    let second = LoraTrainable::new(&model, "x", "tiny", &spec, 99, 0.1).unwrap();
    let s = train_loop(
        &model,
        &second,
        &data,
        &[],
        &cfg,
        Some(dir.path()),
        &JobControl::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(s.resumed_from, 3);
    let (a, b) = (final_adapter(&whole), final_adapter(&second));
    for (k, p) in &a.pairs {
        let q = &b.pairs[k];
        assert_eq!(max_abs(&(&p.a - &q.a).unwrap()), 0.0, "{k:?} A differs");
        assert_eq!(max_abs(&(&p.b - &q.b).unwrap()), 0.0, "{k:?} B differs");
    }
    let _ = AdapterStack::base();
}

/// Mixed precision as the GPU runs it: frozen weights and activations in bf16 (and f16),
/// adapters as f32 master weights. The loss and gradients stay close to the f32 ones, and the
/// gradients reach the master weights as f32.
#[test]
fn half_precision_activations_train_f32_master_weights() {
    let model = model();
    let (seqs, _) = fixture_batch();
    let refs: Vec<&TrainSeq> = seqs.iter().collect();
    let adapter = load_peft(&fixtures().join("adapter-a"), &Device::Cpu).unwrap();
    let tr = LoraTrainable::from_adapter(adapter).unwrap();
    let vars = tr.vars();
    let want = loss_and_grads(&model, &tr.stack().unwrap(), &refs, TRAIN, &vars, 1.0).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let half = model.clone().to_dtype(dtype).unwrap();
        assert_eq!(half.dtype(), dtype);
        let got = loss_and_grads(&half, &tr.stack().unwrap(), &refs, TRAIN, &vars, 1.0).unwrap();
        let rel = ((got.loss - want.loss) / want.loss).abs();
        assert!(
            rel < 0.02,
            "{dtype:?}: loss {} vs f32 {}",
            got.loss,
            want.loss
        );
        for (i, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
            let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
            assert_eq!(g.dtype(), DType::F32, "var {i}: master gradients are f32");
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let dot: f32 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let cos = dot / (norm(&g) * norm(&w)).max(1e-12);
            assert!(
                cos > 0.99,
                "{dtype:?} var {i}: cosine to the f32 gradient {cos}"
            );
        }
    }
}

/// The hand-written backward of training's path (`loss_and_grads`) against candle's autodiff
/// of the whole `Mode::Train` graph, with LoRA dropout on: a LoRA's factors and CAT's
/// coefficients on the tiny Llama, and a LoRA on all seven projections of the tiny Qwen2
/// (biased q, k, v; untied head), with every layer taped, none, or one.
#[test]
fn hand_written_backward_matches_autodiff() {
    let (seqs, _) = fixture_batch();
    let refs: Vec<&TrainSeq> = seqs.iter().collect();
    let peft = |name: &str| load_peft(&fixtures().join(name), &Device::Cpu).unwrap();
    let (a, b) = (peft("adapter-a"), peft("adapter-b"));
    let mode = Mode::Train {
        dropout: 0.1,
        seed: 7,
    };
    let lora = LoraTrainable::from_adapter(a.clone()).unwrap();
    let cat = |param| {
        let ads = vec![a.clone(), b.clone()];
        CatTrainable::new(ads, 2, param, CatInit::Normal, 1, &Device::Cpu)
    };
    let softmax = cat(CatParam::Softmax).unwrap();
    let free = cat(CatParam::Free).unwrap();
    let qwen_lora = LoraTrainable::from_adapter(peft("adapter-qwen")).unwrap();
    let llama = model();
    let qwen = load_hf_weights(&fixtures().join("tiny-qwen2"), &Device::Cpu).unwrap();
    let cases = [
        ("lora", &llama, &lora as &dyn Trainable),
        ("cat softmax", &llama, &softmax),
        ("cat free", &llama, &free),
        ("qwen2 lora", &qwen, &qwen_lora),
    ];
    for (what, model, tr) in cases {
        let vars = tr.vars();
        let (loss, _, _) = batch_loss(model, &tr.stack().unwrap(), &refs, mode).unwrap();
        let want = loss.backward().unwrap();
        for keep in 0..=2 {
            let got =
                loss_and_grads_keeping(model, &tr.stack().unwrap(), &refs, mode, &vars, 1.0, keep)
                    .unwrap();
            let l = loss.to_scalar::<f32>().unwrap() as f64;
            assert!(
                (got.loss - l).abs() < 1e-5,
                "{what} keep {keep}: loss {} vs {l}",
                got.loss
            );
            for (i, v) in vars.iter().enumerate() {
                let w = want.get(v.as_tensor()).expect("autodiff reached the var");
                let g = got.grads[i]
                    .as_ref()
                    .expect("the hand-written backward reached the var");
                let d = max_abs(&(g - w).unwrap());
                let scale = max_abs(w).max(1e-6);
                assert!(
                    d < 1e-5 + 1e-3 * scale,
                    "{what} keep {keep} var {i}: max abs diff {d} (grad scale {scale})"
                );
            }
        }
    }
}

/// A non-finite loss is blamed on the learning rate only when it is one: NaN in a frozen
/// weight (the model, or an adapter CAT composes) is named as such, and only a run whose
/// finite weights were driven to overflow by its updates is told to lower the rate.
#[test]
fn a_non_finite_loss_says_what_caused_it() {
    let data = toy_data(6);
    let spec = LoraSpec {
        rank: 2,
        alpha: 4.0,
        use_rslora: false,
        targets: vec![Module::Q, Module::Down],
    };
    let cfg = LoopConfig {
        epochs: 1,
        batch_size: 3,
        max_steps: Some(2),
        ..Default::default()
    };
    let run = |model: &Llama, t: &dyn Trainable, cfg: &LoopConfig| {
        train_loop(
            model,
            t,
            &data,
            &[],
            cfg,
            None,
            &JobControl::default(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };

    // A NaN weight in the model: named, and no advice about the learning rate.
    let mut bad = model();
    let w = &bad.layers[1].o.weight;
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[0] = f32::NAN;
    bad.layers[1].o.weight = Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap();
    let t = LoraTrainable::new(&bad, "x", "tiny", &spec, 1, 0.0).unwrap();
    let err = run(&bad, &t, &cfg);
    assert!(
        err.contains("model.layers.1.self_attn.o_proj.weight")
            && err.contains("NaN")
            && !err.contains("lower the learning rate"),
        "{err}"
    );

    // CAT over a frozen adapter holding Inf: the adapter is named.
    let good = model();
    let dev = Device::Cpu;
    let fresh = |name: &str, seed| {
        let mut a = LoraAdapter::init(
            name,
            "tiny",
            &|m| good.projection_shape(m),
            good.layers.len(),
            &[Module::Q],
            2,
            4.0,
            false,
            seed,
            &dev,
        )
        .unwrap();
        for p in a.pairs.values_mut() {
            p.b = Tensor::ones(p.b.dims(), DType::F32, &dev).unwrap();
        }
        a
    };
    let mut broken = fresh("broken", 2);
    let p = broken.pairs.get_mut(&(0, Module::Q)).unwrap();
    p.b = (Tensor::ones(p.b.dims(), DType::F32, &dev).unwrap() * f64::INFINITY).unwrap();
    let cat = CatTrainable::new(
        vec![fresh("ok", 1), broken],
        good.layers.len(),
        CatParam::Softmax,
        CatInit::Normal,
        0,
        &dev,
    )
    .unwrap();
    let err = run(&good, &cat, &cfg);
    assert!(
        err.contains("adapter broken layer 0 q_proj lora_B")
            && err.contains("infinite")
            && !err.contains("lower the learning rate"),
        "{err}"
    );

    // Real divergence: clean weights, an absurd learning rate.
    let t = LoraTrainable::new(&good, "x", "tiny", &spec, 1, 0.0).unwrap();
    let wild = LoopConfig {
        lr: 1e38,
        warmup_ratio: 0.0,
        epochs: 4,
        max_steps: Some(8),
        ..cfg.clone()
    };
    let err = run(&good, &t, &wild);
    assert!(err.contains("lower the learning rate"), "{err}");
}

/// The done-when test of CAT: with the defaults a CAT job gets (its own learning rate, minimum
/// steps, uniform start), on two adapters that memorized disjoint facts and data from the
/// first only, the weights move towards the first adapter and the loss on its facts CAT did
/// not see falls below the plain concatenation's.
#[test]
fn cat_with_the_defaults_learns_towards_the_adapter_that_knows_the_data() {
    use soup_core::engine::CatJob;
    use soup_core::train::cat_check::{known_task, run_cat};
    let model = model();
    let task = known_task(&model, 16, 60).unwrap();
    let (la, lb) = task.skill_loss;
    assert!(
        la < 1.0 && lb < 1.0,
        "the skills did not memorize: {la} {lb}"
    );
    let job = CatJob::new("c", "tiny", vec!["a".into(), "b".into()], Vec::new());
    assert_eq!(job.init, CatInit::Uniform);
    let trial = run_cat(&model, &task, job.param, job.init, &job.train).unwrap();
    let m = &trial.movement;
    // 8 examples at batch 8 is one step a pass: the minimum makes it 40.
    assert_eq!(trial.steps, job.train.min_steps);
    assert!(m.verdict.moved(), "{}", m.summary());
    let (a, b) = (&m.spread[0], &m.spread[1]);
    assert!((a.start_mean - 0.5).abs() < 1e-6, "{}", m.summary());
    assert!(a.mean > 0.6 && b.mean < 0.4, "{:?}", m.spread_lines());
    assert!(a.largest_in * 10 >= a.slots * 8, "{:?}", m.spread_lines());
    let h = m.heldout.as_ref().unwrap();
    assert!(
        h.learned < h.start - 0.05,
        "held-out loss {} -> {}",
        h.start,
        h.learned
    );
}
