//! LoRA dropout as one fused op drawn where the tensor lives.
//!
//! The mask comes from a counter-based generator (splitmix64 of the seed and the element's
//! index), so the checkpointed recompute, the hand-written backward and a resumed run all see
//! the same mask, and a CPU and a GPU draw the same mask for the same seed. On the CPU the op
//! draws and applies the mask in one pass over all cores; on CUDA a kernel
//! (`kernels/dropout.cu`, compiled to the committed `kernels/dropout.ptx`) does the same on the
//! device. Drawing the mask on the host and copying it over cost a 3× slower training step on
//! an H200 (about 300 copies a step).

use crate::error::Result;
use candle_core::{CpuStorage, Layout, Shape, Tensor, WithDType};

/// Inverted dropout: each element kept with probability 1 − p and scaled by 1/(1 − p), else 0.
/// Differentiable: the gradient is the same mask applied to the incoming gradient.
pub(crate) fn apply(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Dropout { p, seed })?)
}

/// Whether element `i` survives: the same function as `kernels/dropout_hash.h`.
fn keep(seed: u64, i: u64, p: f32) -> bool {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 40) as f32 / (1u64 << 24) as f32;
    u >= p
}

/// 1/(1 − p) rounded to the element type, as the kernel receives it, so that CPU and GPU
/// multiply by the same number.
fn scale<T: WithDType>(p: f32) -> T {
    T::from_f64(1.0 / (1.0 - p as f64))
}

struct Dropout {
    p: f32,
    seed: u64,
}

impl Dropout {
    fn cpu<T: WithDType + Send + Sync>(
        &self,
        src: &[T],
        layout: &Layout,
    ) -> candle_core::Result<Vec<T>> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("dropout needs a contiguous input".into()))?;
        let src = &src[start..end];
        let s = scale::<T>(self.p);
        let mut out = vec![T::zero(); src.len()];
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(c, (o, x))| {
                for (j, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                    if keep(self.seed, (c * CHUNK + j) as u64, self.p) {
                        *o = x * s;
                    }
                }
            });
        Ok(out)
    }
}

impl candle_core::CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "lora-dropout"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(self.cpu(v, layout)?),
            CpuStorage::F64(v) => CpuStorage::F64(self.cpu(v, layout)?),
            CpuStorage::BF16(v) => CpuStorage::BF16(self.cpu(v, layout)?),
            CpuStorage::F16(v) => CpuStorage::F16(self.cpu(v, layout)?),
            _ => candle_core::bail!("dropout applies to float tensors only"),
        };
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{
            CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
        };
        use candle_core::cuda_backend::{kernel_name, Map1, WrapErr};
        use candle_core::CudaDevice;

        const PTX: &str = include_str!("kernels/dropout.ptx");
        struct Kernel<'a>(&'a Dropout);
        impl Map1 for Kernel<'_> {
            fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
                &self,
                src: &CudaSlice<T>,
                dev: &CudaDevice,
                layout: &Layout,
            ) -> candle_core::Result<CudaSlice<T>> {
                let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
                    candle_core::Error::Msg("dropout needs a contiguous input".into())
                })?;
                let src = src.slice(start..end);
                let n = end - start;
                let func = dev.get_or_load_custom_func(
                    &kernel_name::<T>("soup_dropout"),
                    "soup_dropout",
                    PTX,
                )?;
                // SAFETY: every element is written by the kernel below.
                let dst = unsafe { dev.alloc::<T>(n)? };
                let (seed, p) = (self.0.seed, self.0.p);
                let s = scale::<T>(p).to_f64() as f32;
                let mut builder = func.builder();
                builder.arg(&src);
                builder.arg(&dst);
                builder.arg(&n);
                builder.arg(&seed);
                builder.arg(&p);
                builder.arg(&s);
                // SAFETY: the kernel's signature is (const T*, T*, size_t, uint64_t, float, float).
                unsafe { builder.launch(LaunchConfig::for_num_elems(n as u32)) }.w()?;
                Ok(dst)
            }
        }
        let dev = storage.device();
        let slice = Kernel(self).map(&storage.slice, dev, layout)?;
        Ok((
            candle_core::CudaStorage {
                slice,
                device: dev.clone(),
            },
            layout.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let op = Dropout {
            p: self.p,
            seed: self.seed,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The unfused form this op replaced: a u8 mask drawn on the host, cast, scaled, multiplied.
    fn unfused(x: &Tensor, p: f32, seed: u64) -> Tensor {
        let kept: Vec<u8> = (0..x.elem_count() as u64)
            .map(|i| u8::from(keep(seed, i, p)))
            .collect();
        let mask = Tensor::from_vec(kept, x.shape(), x.device())
            .unwrap()
            .to_dtype(x.dtype())
            .unwrap()
            .affine(1.0 / (1.0 - p as f64), 0.0)
            .unwrap();
        (x * mask).unwrap()
    }

    fn sample(dtype: DType) -> Tensor {
        Tensor::randn(0f32, 1.0, (300, 517), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn fused_op_equals_the_unfused_mask_for_every_float_type() {
        for dtype in [DType::F32, DType::BF16, DType::F16, DType::F64] {
            let x = sample(dtype);
            let got = apply(&x, 0.1, 42).unwrap().to_dtype(DType::F64).unwrap();
            let want = unfused(&x, 0.1, 42).to_dtype(DType::F64).unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert_eq!(diff, 0.0, "{dtype:?}");
        }
    }

    #[test]
    fn keeps_about_one_minus_p_and_the_seed_decides_which() {
        let x = Tensor::ones((400, 500), DType::F32, &Device::Cpu).unwrap();
        for p in [0.05f32, 0.5] {
            let y = apply(&x, p, 7).unwrap();
            let kept = y.ne(0f32).unwrap().to_dtype(DType::F32).unwrap();
            let rate = kept.mean_all().unwrap().to_scalar::<f32>().unwrap();
            assert!((rate - (1.0 - p)).abs() < 0.005, "p {p}: kept {rate}");
            let again = apply(&x, p, 7).unwrap();
            let other = apply(&x, p, 8).unwrap();
            let same = |a: &Tensor, b: &Tensor| {
                a.eq(b)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .mean_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            assert_eq!(same(&y, &again), 1.0);
            assert!(
                same(&y, &other) < 1.0 - p / 2.0,
                "p {p}: seeds 7 and 8 agree"
            );
        }
    }

    #[test]
    fn a_strided_input_is_masked_in_its_logical_order() {
        let x = sample(DType::F32);
        let t = x.t().unwrap();
        let got = apply(&t, 0.3, 3).unwrap();
        let want = apply(&t.contiguous().unwrap(), 0.3, 3).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn the_gradient_is_the_same_mask_applied_to_the_incoming_gradient() {
        let x = Var::from_tensor(&sample(DType::F32)).unwrap();
        let w = sample(DType::F32);
        let loss = (apply(x.as_tensor(), 0.2, 11).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(x.as_tensor()).expect("x has a gradient");
        let want = unfused(&w, 0.2, 11);
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    /// The GPU kernel's generator is the C header; compiled for the host with the system's C
    /// compiler, it must keep exactly the elements the Rust generator keeps.
    #[test]
    fn the_kernels_generator_compiled_for_the_host_agrees_with_the_cpu_op() {
        let dir = tempfile::tempdir().unwrap();
        let kernels = concat!(env!("CARGO_MANIFEST_DIR"), "/src/model/kernels");
        let main = dir.path().join("main.c");
        std::fs::write(
            &main,
            r#"#include <stdio.h>
#include "dropout_hash.h"
int main(void) {
    const unsigned long long seeds[] = {0ull, 42ull, 0xFFFFFFFFFFFFFFFFull, 1234567890123ull};
    const float ps[] = {0.05f, 0.5f, 0.9f};
    for (int s = 0; s < 4; s++) for (int q = 0; q < 3; q++) {
        for (unsigned long long i = 0; i < 4096; i++) putchar('0' + soup_dropout_keep(seeds[s], i * 977ull, ps[q]));
        putchar('\n');
    }
    return 0;
}"#,
        )
        .unwrap();
        let exe = dir.path().join("hash");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = std::process::Command::new(&cc)
            .args(["-O2", "-I", kernels, "-o"])
            .arg(&exe)
            .arg(&main)
            .status()
            .unwrap_or_else(|e| panic!("the C compiler `{cc}` could not run: {e}"));
        assert!(status.success(), "{cc} failed on dropout_hash.h");
        let out = std::process::Command::new(&exe).output().unwrap();
        let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        let mut k = 0;
        for seed in [0u64, 42, u64::MAX, 1_234_567_890_123] {
            for p in [0.05f32, 0.5, 0.9] {
                let want: String = (0..4096u64)
                    .map(|i| if keep(seed, i * 977, p) { '1' } else { '0' })
                    .collect();
                assert_eq!(lines[k], want, "seed {seed} p {p}");
                k += 1;
            }
        }
    }

    /// dropout.ptx is generated (kernels/build-ptx.sh) and committed; its first line records
    /// the sources it was built from. Editing the kernel without regenerating fails here.
    #[test]
    fn ptx_is_built_from_the_committed_kernel() {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(include_bytes!("kernels/dropout_hash.h"));
        h.update(include_bytes!("kernels/dropout.cu"));
        let sum: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let ptx = include_str!("kernels/dropout.ptx");
        let first = ptx.lines().next().unwrap_or("");
        assert_eq!(
            first,
            format!("// sources sha256 {sum}"),
            "run core/src/model/kernels/build-ptx.sh"
        );
        for name in ["f32", "bf16", "f16", "f64"] {
            assert!(
                ptx.contains(&format!(".entry soup_dropout_{name}(")),
                "{name} kernel missing"
            );
        }
    }
}
