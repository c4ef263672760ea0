// Per-element arithmetic of temper's quantizers, shared by the CUDA kernels and by the host
// build the tests run against the Rust scalar references (crates/kernels/src/scalar.rs).
//
// Everything here is __host__ __device__ and uses integer bit operations or IEEE operations
// that round the same way on both sides (round-to-nearest-even, no fast-math), so the GPU
// writes the same codes and scales as the CPU path, bit for bit.
#pragma once

#include <stdint.h>

// The host build (kernels/host_check.cu compiled by nvcc as C++, `-x c++`) has no CUDA
// keywords: the functions become plain inline host functions, exactly the host half of a
// .cu compile, with no device code and so no CUDA runtime to link.
#if !defined(__CUDACC__)
#define __host__
#define __device__
#define __forceinline__ inline __attribute__((always_inline))
#endif

#define TQ_HD __host__ __device__ __forceinline__

// Bits of 448.0, the largest finite E4M3 value; finite magnitudes above it saturate here.
#define TQ_FP8_MAX_BITS 0x43E00000u
// Bits of 2^-6, the smallest normal E4M3 magnitude.
#define TQ_FP8_MIN_NORMAL_BITS 0x3C800000u
// E4M3 "fn" NaN magnitude code; a NaN input keeps its sign (0x7F or 0xFF).
#define TQ_FP8_NAN 0x7Fu

// Storage dtype of scales: the rounding `round_scale_up` applies.
#define TQ_SCALE_F32 0
#define TQ_SCALE_F16 1
#define TQ_SCALE_BF16 2

// Stored dtype of source weights.
#define TQ_SRC_F32 0
#define TQ_SRC_F16 1
#define TQ_SRC_BF16 2

TQ_HD uint32_t tq_f32_bits(float x) {
    union { float f; uint32_t u; } v;
    v.f = x;
    return v.u;
}

TQ_HD float tq_bits_f32(uint32_t u) {
    union { float f; uint32_t u; } v;
    v.u = u;
    return v.f;
}

// x rounded to the nearest integer, ties to even, for |x| <= 2^22: adding 1.5 * 2^23 pushes
// the fraction out of the mantissa so the IEEE add does the rounding (the same trick as the
// Rust reference). __fadd_rn keeps nvcc from contracting or reassociating on the device.
TQ_HD float tq_round_half_even_small(float x) {
    const float magic = 12582912.0f;
#ifdef __CUDA_ARCH__
    return __fsub_rn(__fadd_rn(x, magic), magic);
#else
    volatile float t = x + magic;
    return t - magic;
#endif
}

// IEEE single-precision multiply, rounded to nearest even, never fused with a later add.
TQ_HD float tq_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

// IEEE single-precision divide, correctly rounded (the Rust reference's `1.0 / scale`).
TQ_HD float tq_div(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

// Nearest E4M3 "fn" code to x, ties to even; beyond +-448 and +-Inf saturate to 0x7E/0xFE;
// NaN gives 0x7F (0xFF with its sign bit); -0.0 gives 0x80. Reference: f32_to_fp8_e4m3.
TQ_HD uint8_t tq_f32_to_fp8(float x) {
    uint32_t bits = tq_f32_bits(x);
    uint8_t sign = (uint8_t)((bits >> 24) & 0x80u);
    uint32_t abs = bits & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) return sign | TQ_FP8_NAN;
    uint32_t a = abs < TQ_FP8_MAX_BITS ? abs : TQ_FP8_MAX_BITS;
    uint32_t mag;
    if (a < TQ_FP8_MIN_NORMAL_BITS) {
        // |x| * 512 is exact and lies in [0, 8): the subnormal code, rounded half to even.
        mag = (uint32_t)tq_round_half_even_small(tq_mul(tq_bits_f32(a), 512.0f));
    } else {
        // Round the 23-bit mantissa to 3 bits, half to even; a carry bumps the exponent.
        uint32_t rounded = a + 0x7FFFFu + ((a >> 20) & 1u);
        mag = (rounded >> 20) - (120u << 3);
    }
    return sign | (uint8_t)mag;
}

// Exact value of an E4M3 "fn" code (0x7F / 0xFF are NaN). Reference: fp8_e4m3_to_f32.
TQ_HD float tq_fp8_to_f32(uint8_t code) {
    uint32_t sign = ((uint32_t)code & 0x80u) << 24;
    uint32_t mag = code & 0x7Fu;
    uint32_t e = mag >> 3, m = mag & 7u;
    if (mag == 0x7Fu) return tq_bits_f32(sign | 0x7FC00000u);
    if (e > 0) return tq_bits_f32(sign | ((e + 120u) << 23) | (m << 20));
    if (m == 0) return tq_bits_f32(sign);
    // m * 2^-9 is a normal f32: its leading bit sets the exponent, the rest is mantissa.
    uint32_t p = m >= 4 ? 2u : (m >= 2 ? 1u : 0u);
    return tq_bits_f32(sign | ((127u - 9u + p) << 23) | ((m - (1u << p)) << (23u - p)));
}

// INT8 code of an already scaled value: clamp, round half to even; NaN gives 0.
// Reference: int8_code.
TQ_HD int8_t tq_int8_code(float y) {
    if (y != y) return 0;
    float c = y < -128.0f ? -128.0f : (y > 127.0f ? 127.0f : y);
    return (int8_t)tq_round_half_even_small(c);
}

// f16 bits -> f32, exact (subnormals, infinities and NaN included).
TQ_HD float tq_f16_to_f32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1Fu) return tq_bits_f32(sign | 0x7F800000u | (m << 13));
    if (e > 0) return tq_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
    if (m == 0) return tq_bits_f32(sign);
    // Subnormal: m * 2^-24, normalised.
    uint32_t p = 0;
    while ((m >> (p + 1)) != 0) p++;
    return tq_bits_f32(sign | ((p + 103u) << 23) | ((m - (1u << p)) << (23u - p)));
}

// f32 -> f16 bits, round to nearest even, overflow to infinity: for finite, non-negative
// inputs (scales), which is all round_scale_up passes it.
TQ_HD uint16_t tq_f32_to_f16_pos(float x) {
    uint32_t a = tq_f32_bits(x);
    if (a >= 0x477FF000u) return 0x7C00u;  // rounds to at least 65536: infinity
    if (a >= 0x38800000u) {                // normal f16 (>= 2^-14)
        uint32_t rounded = a + 0xFFFu + ((a >> 13) & 1u);
        return (uint16_t)((rounded >> 13) - (112u << 10));
    }
    // Subnormal f16: x / 2^-24 rounded half to even (x < 2^-14, so the result is < 1024).
    return (uint16_t)tq_round_half_even_small(tq_mul(x, 16777216.0f));
}

// f32 -> bf16 bits, round to nearest even, for finite non-negative inputs.
TQ_HD uint16_t tq_f32_to_bf16_pos(float x) {
    uint32_t a = tq_f32_bits(x);
    return (uint16_t)((a + 0x7FFFu + ((a >> 16) & 1u)) >> 16);
}

// `scale` rounded up to the next value the scale dtype stores, so codes never exceed their
// range. Reference: pipeline's round_scale_up (temper_kernels::round_scale_up).
TQ_HD float tq_round_scale_up(float scale, int dtype) {
    if (dtype == TQ_SCALE_F16) {
        uint16_t h = tq_f32_to_f16_pos(scale);
        if (tq_f16_to_f32(h) < scale) h = (uint16_t)(h + 1u);
        return tq_f16_to_f32(h);
    }
    if (dtype == TQ_SCALE_BF16) {
        uint16_t h = tq_f32_to_bf16_pos(scale);
        if (tq_bits_f32((uint32_t)h << 16) < scale) h = (uint16_t)(h + 1u);
        return tq_bits_f32((uint32_t)h << 16);
    }
    return scale;
}

// The scale of a group whose largest finite magnitude is `absmax`: absmax / qmax rounded up
// to the scale dtype; an all-zero group gets 1.0; a scale that underflows the dtype gets its
// smallest positive value. Reference: the quantize pass's `scale_for`.
TQ_HD float tq_scale_for(float absmax, float qmax, int dtype) {
    if (absmax == 0.0f) return 1.0f;
    float s = tq_round_scale_up(tq_div(absmax, qmax), dtype);
    return s > 0.0f ? s : tq_round_scale_up(1.17549435e-38f, dtype);
}

// Sign-cleared bit pattern of a source element (f32, or f16/bf16 as 16 bits), whose integer
// maximum is the bit pattern of the largest magnitude. Reference: absmax_bits_segments.
TQ_HD uint32_t tq_abs_bits(const void *src, int src_dtype, uint64_t i) {
    if (src_dtype == TQ_SRC_F32) return ((const uint32_t *)src)[i] & 0x7FFFFFFFu;
    return ((const uint16_t *)src)[i] & 0x7FFFu;
}

// Whether a sign-cleared bit pattern is NaN or infinite.
TQ_HD bool tq_bits_non_finite(uint32_t bits, int src_dtype) {
    if (src_dtype == TQ_SRC_F32) return bits >= 0x7F800000u;
    if (src_dtype == TQ_SRC_F16) return bits >= 0x7C00u;
    return bits >= 0x7F80u;
}

// The magnitude a sign-cleared bit pattern stands for. Reference: absmax_from_bits.
TQ_HD float tq_abs_from_bits(uint32_t bits, int src_dtype) {
    if (src_dtype == TQ_SRC_F32) return tq_bits_f32(bits);
    if (src_dtype == TQ_SRC_F16) return tq_f16_to_f32((uint16_t)bits);
    return tq_bits_f32(bits << 16);
}

// Element i of the source widened to f32 (exact).
TQ_HD float tq_load(const void *src, int src_dtype, uint64_t i) {
    if (src_dtype == TQ_SRC_F32) return ((const float *)src)[i];
    uint16_t h = ((const uint16_t *)src)[i];
    if (src_dtype == TQ_SRC_F16) return tq_f16_to_f32(h);
    return tq_bits_f32((uint32_t)h << 16);
}
