// Quantization kernels: FP8 E4M3 and INT8 codes with per-row-group scales (per channel is
// one group of all columns), FP8 with 128x128 (any) block scales, and FP8 with one scale per
// tensor. Every per-element step is in quant.cuh, shared with the host build the tests
// check against the Rust scalar references, so the codes and scales equal the CPU path's.
//
// Non-finite weights: the lowest linear index of a NaN/Inf is recorded with atomicMin in
// *first_bad (the host initialises it to ~0 and fails the tensor naming row and column, as
// the CPU path does); the codes written for such a tensor are not meaningful.
#include "quant.cuh"

// Most scale groups one row may have (a row's group maxima live in shared memory).
#define TQ_MAX_GROUPS 1024

__device__ __forceinline__ uint8_t tq_encode(float x, float inv, int to_fp8) {
    float y = tq_mul(x, inv);
    return to_fp8 ? tq_f32_to_fp8(y) : (uint8_t)tq_int8_code(y);
}

// One block per row. Pass 1: each group's largest magnitude (as bits) in shared memory;
// pass 2: scales; pass 3: codes.
extern "C" __global__ void tq_quantize_rows(const void *src, int src_dtype, uint32_t cols,
                                            uint32_t group, int to_fp8, float qmax,
                                            int scale_dtype, uint8_t *codes, float *scales,
                                            unsigned long long *first_bad,
                                            unsigned int *zero_groups) {
    __shared__ uint32_t gmax[TQ_MAX_GROUPS];
    __shared__ float ginv[TQ_MAX_GROUPS];
    const uint64_t row = blockIdx.x;
    const uint32_t groups = cols / group;
    const uint64_t base = row * (uint64_t)cols;
    for (uint32_t g = threadIdx.x; g < groups; g += blockDim.x) gmax[g] = 0;
    __syncthreads();
    for (uint32_t j = threadIdx.x; j < cols; j += blockDim.x) {
        uint32_t b = tq_abs_bits(src, src_dtype, base + j);
        if (tq_bits_non_finite(b, src_dtype)) {
            atomicMin(first_bad, (unsigned long long)(base + j));
        } else {
            atomicMax(&gmax[j / group], b);
        }
    }
    __syncthreads();
    const uint64_t sbase = row * (uint64_t)groups;
    for (uint32_t g = threadIdx.x; g < groups; g += blockDim.x) {
        if (gmax[g] == 0) atomicAdd(zero_groups, 1u);
        float s = tq_scale_for(tq_abs_from_bits(gmax[g], src_dtype), qmax, scale_dtype);
        scales[sbase + g] = s;
        ginv[g] = tq_div(1.0f, s);
    }
    __syncthreads();
    for (uint32_t j = threadIdx.x; j < cols; j += blockDim.x) {
        codes[base + j] = tq_encode(tq_load(src, src_dtype, base + j), ginv[j / group], to_fp8);
    }
}

// One block per (block row, block column) tile of br x bc elements (edge tiles are smaller);
// scales are [ceil(rows / br), ceil(cols / bc)] row-major.
extern "C" __global__ void tq_quantize_fp8_blocks(const void *src, int src_dtype, uint32_t rows,
                                                  uint32_t cols, uint32_t br, uint32_t bc,
                                                  int scale_dtype, uint8_t *codes, float *scales,
                                                  unsigned long long *first_bad,
                                                  unsigned int *zero_groups) {
    __shared__ uint32_t tile_max;
    __shared__ float tile_inv;
    const uint32_t r0 = blockIdx.y * br, c0 = blockIdx.x * bc;
    const uint32_t h = min(br, rows - r0), w = min(bc, cols - c0);
    if (threadIdx.x == 0) tile_max = 0;
    __syncthreads();
    uint32_t local = 0;
    for (uint32_t i = threadIdx.x; i < h * w; i += blockDim.x) {
        uint64_t at = (uint64_t)(r0 + i / w) * cols + c0 + i % w;
        uint32_t b = tq_abs_bits(src, src_dtype, at);
        if (tq_bits_non_finite(b, src_dtype)) {
            atomicMin(first_bad, (unsigned long long)at);
        } else if (b > local) {
            local = b;
        }
    }
    atomicMax(&tile_max, local);
    __syncthreads();
    if (threadIdx.x == 0) {
        if (tile_max == 0) atomicAdd(zero_groups, 1u);
        float s = tq_scale_for(tq_abs_from_bits(tile_max, src_dtype), 448.0f, scale_dtype);
        scales[(uint64_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
        tile_inv = tq_div(1.0f, s);
    }
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < h * w; i += blockDim.x) {
        uint64_t at = (uint64_t)(r0 + i / w) * cols + c0 + i % w;
        codes[at] = tq_f32_to_fp8(tq_mul(tq_load(src, src_dtype, at), tile_inv));
    }
}

// Per-tensor scale, step 1: the largest finite magnitude's bits into *absmax_bits.
extern "C" __global__ void tq_absmax_bits(const void *src, int src_dtype, uint64_t n,
                                         uint32_t *absmax_bits, unsigned long long *first_bad) {
    uint32_t local = 0;
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        uint32_t b = tq_abs_bits(src, src_dtype, i);
        if (tq_bits_non_finite(b, src_dtype)) {
            atomicMin(first_bad, (unsigned long long)i);
        } else if (b > local) {
            local = b;
        }
    }
    // Warp maximum first, so one atomic per warp reaches global memory.
    for (int off = 16; off > 0; off >>= 1) {
        uint32_t other = __shfl_down_sync(0xFFFFFFFFu, local, off);
        local = other > local ? other : local;
    }
    if ((threadIdx.x & 31) == 0) atomicMax(absmax_bits, local);
}

// Per-tensor scale, step 2: every block derives the one scale from *absmax_bits (cheap, and
// no round trip to the host), block 0 stores it, all write codes.
extern "C" __global__ void tq_quantize_fp8_tensor(const void *src, int src_dtype, uint64_t n,
                                                  const uint32_t *absmax_bits, int scale_dtype,
                                                  uint8_t *codes, float *scale,
                                                  unsigned int *zero_groups) {
    float s = tq_scale_for(tq_abs_from_bits(*absmax_bits, src_dtype), 448.0f, scale_dtype);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        *scale = s;
        if (*absmax_bits == 0) *zero_groups = 1;
    }
    float inv = tq_div(1.0f, s);
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        codes[i] = tq_f32_to_fp8(tq_mul(tq_load(src, src_dtype, i), inv));
    }
}
