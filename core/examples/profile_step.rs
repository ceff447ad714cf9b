//! Where one LoRA training step's time goes (SmolLM2 shapes, batch 8 x 256, f32): the forward
//! without a graph, one layer's forward with graph and its backward, and the chunked head.
//!
//!     cargo run --release -p soup-core --example profile_step -- HF_DIR

use candle_core::{Device, Tensor, Var};
use soup_core::lora::AdapterStack;
use soup_core::model::load::load_hf_weights;
use soup_core::model::{ForwardInput, Mode};
use soup_core::train::{LoraSpec, LoraTrainable, Trainable};
use std::time::Instant;

fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let model = load_hf_weights(std::path::Path::new(&dir), &Device::Cpu).unwrap();
    let tr = LoraTrainable::new(&model, "p", "p", &LoraSpec::default(), 0, 0.0).unwrap();
    let stack: AdapterStack = tr.stack().unwrap();
    let ids: Vec<u32> = (0..8 * 256)
        .map(|i| 100 + (i * 7919 % 900) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (8, 256), &Device::Cpu).unwrap();
    let input = ForwardInput::default();
    let frame = model.frame(&ids, &input, 0).unwrap();
    let train = Mode::Train {
        dropout: 0.0,
        seed: 0,
    };
    let x0 = model.embed(&ids).unwrap();
    for rep in 0..2 {
        let t = Instant::now();
        let mut x = x0.clone();
        for l in 0..model.layers.len() {
            x = model
                .layer_forward(l, &x, &frame, &stack, train.without_graph(), None)
                .unwrap()
                .detach();
        }
        let fwd_nograd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let xv = Var::from_tensor(&x0).unwrap();
        let y = model
            .layer_forward(5, xv.as_tensor(), &frame, &stack, train, None)
            .unwrap();
        let fwd_train_layer = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = (y * &x0).unwrap().sum_all().unwrap().backward().unwrap();
        let bwd_layer = t.elapsed().as_secs_f64();
        drop(g);
        let t = Instant::now();
        let top = Var::from_tensor(&x).unwrap();
        let rows: Vec<u32> = (0..2048u32).collect();
        let n = 256;
        let mut total = 0.0;
        for c in 0..8 {
            let inp = ForwardInput {
                rows: Some(
                    Tensor::from_vec(rows[c * n..(c + 1) * n].to_vec(), n, &Device::Cpu).unwrap(),
                ),
                ..Default::default()
            };
            let logits = model
                .head(top.as_tensor(), &inp, train)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let labels = Tensor::from_vec(vec![5u32; n], n, &Device::Cpu).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
            total += loss.to_scalar::<f32>().unwrap();
            let _ = loss.backward().unwrap();
        }
        let head = t.elapsed().as_secs_f64();
        println!("rep {rep}: fwd no-grad all layers {fwd_nograd:.2}s | per layer: train fwd {fwd_train_layer:.3}s bwd {bwd_layer:.3}s (x30 = {:.2}s) | head fwd+bwd {head:.2}s | {total}", 30.0 * (fwd_train_layer + bwd_layer));
    }
}
