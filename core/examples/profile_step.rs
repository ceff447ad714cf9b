//! Where one LoRA training step's time and memory go (SmolLM2 shapes, batch 8 x 256, f32):
//! each layer's taped forward, the head with its loss and backward, each layer's backward, with
//! the resident memory after each phase.
//!
//!     cargo run --release -p soup-core --example profile_step -- HF_DIR

use candle_core::{Device, Tensor};
use soup_core::model::load::load_hf_weights;
use soup_core::model::{ForwardInput, Mode, StackGrads};
use soup_core::train::{LoraSpec, LoraTrainable, Trainable};
use std::time::Instant;

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: profile_step HF_DIR");
    let model = load_hf_weights(std::path::Path::new(&dir), &Device::Cpu).unwrap();
    let tr = LoraTrainable::new(&model, "p", "p", &LoraSpec::default(), 0, 0.0).unwrap();
    let stack = tr.stack().unwrap();
    let (b, s) = (8, 256);
    let ids: Vec<u32> = (0..b * s).map(|i| 100 + (i * 7919 % 900) as u32).collect();
    let labels = Tensor::from_vec(ids[1..].to_vec(), b * s - 1, &Device::Cpu).unwrap();
    let rows = Tensor::arange(0u32, (b * s - 1) as u32, &Device::Cpu).unwrap();
    let ids = Tensor::from_vec(ids, (b, s), &Device::Cpu).unwrap();
    let frame = model.frame(&ids, &ForwardInput::default(), 0).unwrap();
    let mode = Mode::Train {
        dropout: 0.0,
        seed: 0,
    };
    println!("weights loaded: {:.0} MB", rss_mb());
    for rep in 0..2 {
        let t = Instant::now();
        let mut x = model.embed(&ids).unwrap();
        let mut tapes = Vec::new();
        for l in 0..model.layers.len() {
            let (y, tape) = model
                .layer_forward_taped(l, &x, &frame, &stack, mode)
                .unwrap();
            tapes.push(tape);
            x = y;
        }
        let fwd = t.elapsed().as_secs_f64();
        let fwd_mb = rss_mb();
        let t = Instant::now();
        let (loss, mut g) = model.head_loss_backward(&x, &rows, &labels, 1.0).unwrap();
        let head = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut grads = StackGrads::default();
        for l in (0..model.layers.len()).rev() {
            let tape = tapes.pop().unwrap();
            let gx = model
                .layer_backward(l, tape, &frame, &stack, mode, &g, &mut grads, l > 0)
                .unwrap();
            if let Some(gx) = gx {
                g = gx;
            }
        }
        let bwd = t.elapsed().as_secs_f64();
        let n = grads.for_vars(&tr.vars()).unwrap().iter().flatten().count();
        println!(
            "rep {rep}: taped forward {fwd:.2}s ({fwd_mb:.0} MB after) | head loss+backward \
             {head:.2}s | layers backward {bwd:.2}s | step {:.2}s, {:.0} MB | loss {loss:.3}, {n} grads",
            fwd + head + bwd,
            rss_mb()
        );
    }
}
