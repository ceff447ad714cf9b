//! The frozen projections' product at a generation step's row counts, candle's gemm on f32
//! weights against the streaming kernel on bf16 weights (what `--dtype bf16` runs on the CPU;
//! f32 weights go to gemm in `matmul_t` too), on SmolLM2-135M's shapes: milliseconds and the
//! weight bytes streamed per second.
//!
//!     cargo run --release -p soup-core --example linear_bench [REPS]

use candle_core::{DType, Device, Tensor};
use soup_core::model::linear::matmul_t;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() -> candle_core::Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let dev = Device::Cpu;
    println!("m\tn\tk\tgemm_f32_ms\tstream_bf16_ms\tgemm_GBps\tbf16_GBps");
    for m in [1usize, 4, 16] {
        for (n, k) in [
            (576, 576),
            (192, 576),
            (1536, 576),
            (576, 1536),
            (49152, 576),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
            let wb = w.to_dtype(DType::BF16)?;
            let wt = w.t()?;
            let g = time(reps, || {
                x.matmul(&wt).unwrap();
            });
            let b = time(reps, || {
                matmul_t(&x, &wb).unwrap();
            });
            let bytes = (n * k) as f64;
            println!(
                "{m}\t{n}\t{k}\t{:.3}\t{:.3}\t{:.1}\t{:.1}",
                g * 1e3,
                b * 1e3,
                4.0 * bytes / g / 1e9,
                2.0 * bytes / b / 1e9
            );
        }
    }
    Ok(())
}
