// The per-element arithmetic of quant.cuh compiled for the host, so tests on machines with
// no GPU run exactly the functions the kernels run against the Rust scalar references.
// Plain C entry points over arrays; nothing here touches a device.
#include "quant.cuh"

extern "C" {

void tq_host_f32_to_fp8(const float *x, uint8_t *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) out[i] = tq_f32_to_fp8(x[i]);
}

void tq_host_fp8_to_f32(const uint8_t *codes, float *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) out[i] = tq_fp8_to_f32(codes[i]);
}

void tq_host_int8_code(const float *y, int8_t *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) out[i] = tq_int8_code(y[i]);
}

void tq_host_round_scale_up(const float *s, int dtype, float *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) out[i] = tq_round_scale_up(s[i], dtype);
}

void tq_host_scale_for(const float *absmax, float qmax, int dtype, float *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) out[i] = tq_scale_for(absmax[i], qmax, dtype);
}

void tq_host_load(const void *src, int src_dtype, float *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) out[i] = tq_load(src, src_dtype, i);
}

// The whole row quantizer as the kernel computes it (groups' maxima, scales, codes), run
// serially: returns the linear index of the first non-finite element, or ~0.
uint64_t tq_host_quantize_rows(const void *src, int src_dtype, uint64_t rows, uint32_t cols,
                               uint32_t group, int to_fp8, float qmax, int scale_dtype,
                               uint8_t *codes, float *scales) {
    uint32_t groups = cols / group;
    for (uint64_t r = 0; r < rows; r++) {
        for (uint32_t g = 0; g < groups; g++) {
            uint32_t m = 0;
            for (uint32_t j = g * group; j < (g + 1) * group; j++) {
                uint32_t b = tq_abs_bits(src, src_dtype, r * cols + j);
                if (tq_bits_non_finite(b, src_dtype)) return r * cols + j;
                m = b > m ? b : m;
            }
            float s = tq_scale_for(tq_abs_from_bits(m, src_dtype), qmax, scale_dtype);
            scales[r * groups + g] = s;
            float inv = tq_div(1.0f, s);
            for (uint32_t j = g * group; j < (g + 1) * group; j++) {
                float y = tq_mul(tq_load(src, src_dtype, r * cols + j), inv);
                codes[r * cols + j] = to_fp8 ? tq_f32_to_fp8(y) : (uint8_t)tq_int8_code(y);
            }
        }
    }
    return ~(uint64_t)0;
}

}
