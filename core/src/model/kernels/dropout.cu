// Inverted LoRA dropout drawn on the GPU: y = x * keep(seed, i) * scale, one thread per element
// (grid-stride). The mask is never materialized or copied from the host. `scale` is 1/(1-p)
// already rounded to the element type by the caller, so the product equals the CPU's.
// Regenerate dropout.ptx with build-ptx.sh after any change (a test checks the recorded hash).
#define SOUP_DEVICE __device__
#include "dropout_hash.h"
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define SOUP_DROPOUT(NAME, T, TO_F, FROM_F)                                                    \
    extern "C" __global__ void NAME(const T *x, T *y, const size_t n, const uint64_t seed,     \
                                    const float p, const float scale) {                        \
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;                  \
             i += (size_t)blockDim.x * gridDim.x) {                                            \
            y[i] = soup_dropout_keep(seed, (uint64_t)i, p) ? FROM_F(TO_F(x[i]) * scale)        \
                                                           : FROM_F(0.0f);                     \
        }                                                                                      \
    }

#define SOUP_ID(v) (v)
SOUP_DROPOUT(soup_dropout_f32, float, SOUP_ID, SOUP_ID)
SOUP_DROPOUT(soup_dropout_bf16, __nv_bfloat16, __bfloat162float, __float2bfloat16)
SOUP_DROPOUT(soup_dropout_f16, __half, __half2float, __float2half)

extern "C" __global__ void soup_dropout_f64(const double *x, double *y, const size_t n,
                                           const uint64_t seed, const float p, const float scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)blockDim.x * gridDim.x) {
        y[i] = soup_dropout_keep(seed, (uint64_t)i, p) ? x[i] * (double)scale : 0.0;
    }
}
