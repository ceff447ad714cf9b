//! CAT on a task whose best weights are known, to check that CAT learns and to pick its learning
//! rate: two LoRAs each memorize a disjoint set of made-up facts (token sequences "key → value",
//! in any model's vocabulary), and CAT learns weights over them on facts of the first only.
//! The weights should move towards the first adapter, and the loss on its facts that CAT did
//! not see (held out) should fall below the plain concatenation's.
//!
//! The done-when test of CAT runs it on the tiny fixture model; `soup bench --only cat-lr`
//! runs the learning-rate sweep on any model.

use super::cat::{CatInit, CatMovement, CatParam, CatTrainable, HeldOutLoss};
use super::optim::Decay;
use super::trainer::{train_loop, JobControl, LoopConfig, Trainable};
use super::{LoraSpec, LoraTrainable, TrainSeq};
use crate::error::Result;
use crate::lora::{LoraAdapter, ALL_MODULES};
use crate::model::Llama;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Two adapters and the data CAT learns and is checked on.
pub struct KnownTask {
    /// Memorized `facts_a` (all of them, the held-out ones too).
    pub a: LoraAdapter,
    /// Memorized a disjoint set of facts, none of `a`'s.
    pub b: LoraAdapter,
    /// The first half of `a`'s facts: what CAT trains on.
    pub sample: Vec<TrainSeq>,
    /// The other half: what CAT's held-out loss is measured on.
    pub heldout: Vec<TrainSeq>,
    /// The skill LoRAs' final training loss (a, b): low means they memorized.
    pub skill_loss: (f64, f64),
    a_facts: Vec<TrainSeq>,
    b_facts: Vec<TrainSeq>,
}

impl KnownTask {
    /// The same adapters with CAT data that needs both: `a_share` of every 4 examples from
    /// the first adapter's facts, the rest from the second's, in the sample and in the
    /// held-out set alike. The best weights are then inside the simplex, not at a corner.
    pub fn mixed(&self, a_share: usize) -> KnownTask {
        let half = self.a_facts.len() / 2;
        let take = |facts: &[TrainSeq], from: usize, n: usize| facts[from..from + n].to_vec();
        let (na, nb) = (half * a_share / 4, half * (4 - a_share.min(4)) / 4);
        let pick = |from: usize| {
            let mut v = take(&self.a_facts, from, na);
            v.extend(take(&self.b_facts, from, nb));
            v
        };
        KnownTask {
            a: self.a.clone(),
            b: self.b.clone(),
            sample: pick(0),
            heldout: pick(half),
            skill_loss: self.skill_loss,
            a_facts: self.a_facts.clone(),
            b_facts: self.b_facts.clone(),
        }
    }
}

/// `n` facts `[bos, topic, key] → [v1, v2, v3, end]`: keys `key0..key0 + n`, values drawn from
/// the seed; token ids below 400, so any model's vocabulary has them.
fn facts(n: usize, topic: u32, key0: u32, seed: u64) -> Vec<TrainSeq> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n as u32)
        .map(|i| {
            let prompt = [1u32, topic, key0 + i];
            let answer = [
                rng.gen_range(100..390u32),
                rng.gen_range(100..390u32),
                rng.gen_range(100..390u32),
                60,
            ];
            let ids: Vec<u32> = prompt.iter().chain(&answer).copied().collect();
            let target = (0..ids.len()).map(|t| t >= prompt.len()).collect();
            TrainSeq { ids, target }
        })
        .collect()
}

fn memorize(
    model: &Llama,
    name: &str,
    data: &[TrainSeq],
    epochs: usize,
) -> Result<(LoraAdapter, f64)> {
    let spec = LoraSpec {
        rank: 8,
        alpha: 16.0,
        use_rslora: false,
        targets: ALL_MODULES.to_vec(),
    };
    let tr = LoraTrainable::new(model, name, "known-task", &spec, 1, 0.0)?;
    let cfg = LoopConfig {
        epochs,
        batch_size: 4,
        lr: 3e-3,
        dropout: 0.0,
        warmup_ratio: 0.0,
        decay: Decay::Constant,
        checkpoint_every: 0,
        ..Default::default()
    };
    let s = train_loop(
        model,
        &tr,
        data,
        &[],
        &cfg,
        None,
        &JobControl::default(),
        &mut |_| {},
    )?;
    Ok((tr.adapter()?, s.final_train_loss))
}

/// Trains the two adapters: `facts` facts each, `epochs` passes (about 60 memorize 16 facts
/// on the tiny fixture model).
pub fn known_task(model: &Llama, facts_per_adapter: usize, epochs: usize) -> Result<KnownTask> {
    let n = facts_per_adapter as u32;
    let a_facts = facts(facts_per_adapter, 20, 40, 11);
    let b_facts = facts(facts_per_adapter, 21, 40 + n, 12);
    let (a, la) = memorize(model, "facts-a", &a_facts, epochs)?;
    let (b, lb) = memorize(model, "facts-b", &b_facts, epochs)?;
    let half = facts_per_adapter / 2;
    Ok(KnownTask {
        a,
        b,
        sample: a_facts[..half].to_vec(),
        heldout: a_facts[half..].to_vec(),
        skill_loss: (la, lb),
        a_facts,
        b_facts,
    })
}

/// One CAT run on the task.
#[derive(Debug, Clone)]
pub struct CatTrial {
    pub lr: f64,
    pub steps: usize,
    pub seconds: f64,
    pub movement: CatMovement,
}

/// Learns CAT weights over (a, b) on the sample with `cfg` (a CAT job's loop), and measures
/// how far they moved and the held-out loss at the start and at the end.
pub fn run_cat(
    model: &Llama,
    task: &KnownTask,
    param: CatParam,
    init: CatInit,
    cfg: &LoopConfig,
) -> Result<CatTrial> {
    let t0 = Instant::now();
    let layers = model.layers.len();
    let adapters = vec![task.a.clone(), task.b.clone()];
    let cat = CatTrainable::new(
        adapters.clone(),
        layers,
        param,
        init,
        cfg.seed,
        model.device(),
    )?;
    let start = cat.weight_values()?;
    let batch = cfg.batch_size.max(1);
    let start_loss = super::batch::eval_loss(model, &cat.stack()?, &task.heldout, batch)?;
    let s = train_loop(
        model,
        &cat,
        &task.sample,
        &[],
        cfg,
        None,
        &JobControl::default(),
        &mut |_| {},
    )?;
    let learned = cat.weight_values()?;
    let heldout = HeldOutLoss {
        source: "the first adapter's facts outside the CAT sample".into(),
        examples: task.heldout.len(),
        start: start_loss,
        learned: super::batch::eval_loss(model, &cat.stack()?, &task.heldout, batch)?,
    };
    let movement = CatMovement::measure(
        &adapters,
        layers,
        param,
        init,
        &start,
        &learned,
        Some(heldout),
    )?;
    Ok(CatTrial {
        lr: cfg.lr,
        steps: s.steps,
        seconds: t0.elapsed().as_secs_f64(),
        movement,
    })
}
