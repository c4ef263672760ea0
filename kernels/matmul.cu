// Weight-only products for the model runtime, dequantization fused:
//
//   y[t, n] = sum_j x[t, j] * W[n, j],  W[n, j] = value(codes[n, j]) * scales[n, j / group]
//
// x: m x k row-major f32, codes: n x k row-major (INT8, or FP8 E4M3 when fp8 != 0),
// scales: n x (k / group) f32, y: m x n f32. Each weight is dequantized once with its scale
// folded in (one rounding, as the CPU's Matrix::row) and summed in f32, so results differ
// from the CPU reference only by summation order.
#include "quant.cuh"

__device__ __forceinline__ float tq_weight(const uint8_t *codes, const float *scales,
                                          uint64_t n, uint32_t k, uint32_t group, uint32_t j,
                                          int fp8) {
    uint8_t c = codes[n * k + j];
    // The runtime's value for the never-written NaN codes (FP8_NAN_CODE_VALUE) so every
    // backend agrees on them.
    float v = fp8 ? ((c & 0x7F) == 0x7F ? ((c & 0x80) ? -480.0f : 480.0f) : tq_fp8_to_f32(c))
                  : (float)(int8_t)c;
    return tq_mul(v, scales[n * (k / group) + j / group]);
}

// Decode (m <= TQ_GEMV_MAX_M): one warp per output row, all tokens at once, so each weight
// byte is read from memory once. Lanes read 4 codes at a time where the row allows it.
#define TQ_GEMV_MAX_M 8
extern "C" __global__ void tq_wo_gemv(const uint8_t *codes, const float *scales, int fp8,
                                      uint32_t n_rows, uint32_t k, uint32_t group,
                                      const float *x, uint32_t m, float *y) {
    const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const uint32_t lane = threadIdx.x & 31;
    if (warp >= n_rows) return;
    float acc[TQ_GEMV_MAX_M];
    for (uint32_t t = 0; t < TQ_GEMV_MAX_M; t++) acc[t] = 0.0f;
    for (uint32_t j = lane; j < k; j += 32) {
        float w = tq_weight(codes, scales, warp, k, group, j, fp8);
        for (uint32_t t = 0; t < m; t++) acc[t] = fmaf(x[(uint64_t)t * k + j], w, acc[t]);
    }
    for (uint32_t t = 0; t < m; t++) {
        float v = acc[t];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, off);
        if (lane == 0) y[(uint64_t)t * n_rows + warp] = v;
    }
}

// Prefill and batches: 64 tokens x 64 output rows per block of 256 threads, 16 columns of x
// and of the dequantized weights staged in shared memory per step; each thread owns 4 x 4
// outputs.
#define TQ_TILE 64
#define TQ_STEP 16
extern "C" __global__ void tq_wo_gemm(const uint8_t *codes, const float *scales, int fp8,
                                      uint32_t n_rows, uint32_t k, uint32_t group,
                                      const float *x, uint32_t m, float *y) {
    __shared__ float xs[TQ_STEP][TQ_TILE + 1];
    __shared__ float ws[TQ_STEP][TQ_TILE + 1];
    const uint32_t t0 = blockIdx.y * TQ_TILE, n0 = blockIdx.x * TQ_TILE;
    const uint32_t tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4] = {{0.0f}};
    for (uint32_t j0 = 0; j0 < k; j0 += TQ_STEP) {
        for (uint32_t i = threadIdx.x; i < TQ_STEP * TQ_TILE; i += blockDim.x) {
            uint32_t r = i / TQ_STEP, j = j0 + i % TQ_STEP;
            bool in_k = j < k;
            xs[i % TQ_STEP][r] =
                (in_k && t0 + r < m) ? x[(uint64_t)(t0 + r) * k + j] : 0.0f;
            ws[i % TQ_STEP][r] =
                (in_k && n0 + r < n_rows) ? tq_weight(codes, scales, n0 + r, k, group, j, fp8)
                                          : 0.0f;
        }
        __syncthreads();
        for (uint32_t j = 0; j < TQ_STEP; j++) {
            float a[4], b[4];
            for (int u = 0; u < 4; u++) a[u] = xs[j][ty * 4 + u];
            for (int v = 0; v < 4; v++) b[v] = ws[j][tx * 4 + v];
            for (int u = 0; u < 4; u++)
                for (int v = 0; v < 4; v++) acc[u][v] = fmaf(a[u], b[v], acc[u][v]);
        }
        __syncthreads();
    }
    for (int u = 0; u < 4; u++) {
        uint32_t t = t0 + ty * 4 + u;
        if (t >= m) continue;
        for (int v = 0; v < 4; v++) {
            uint32_t n = n0 + tx * 4 + v;
            if (n < n_rows) y[(uint64_t)t * n_rows + n] = acc[u][v];
        }
    }
}
