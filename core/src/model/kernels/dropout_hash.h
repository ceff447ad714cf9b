// The counter-based generator behind LoRA dropout, shared by the CUDA kernel (dropout.cu) and
// a CPU test that compiles this header with the host C compiler and checks it against the Rust
// version in dropout.rs: the same (seed, element index) keeps or drops the same element on any
// device. splitmix64's finalizer of seed + index * golden ratio; the top 24 bits as a uniform
// in [0, 1); kept when u >= p.
#ifndef SOUP_DROPOUT_HASH_H
#define SOUP_DROPOUT_HASH_H
#include <stdint.h>

#ifndef SOUP_DEVICE
#define SOUP_DEVICE
#endif

SOUP_DEVICE static inline int soup_dropout_keep(uint64_t seed, uint64_t i, float p) {
    uint64_t z = seed + i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    float u = (float)(z >> 40) / 16777216.0f;
    return u >= p;
}
#endif
