// FP8 quantization kernels: one warp per 1x128 tile (16-byte loads where the tile allows), a
// shared-memory transpose for x^T's tiles, one 256-thread block per 128x128 weight block.
// Deterministic: a max is order-independent and no atomics are used.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cfloat>

#include "fp8_quantize.cuh"

namespace latentmoe::kernels {

namespace {

constexpr int kTile = 128;
constexpr float kMax = 448.0f;

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }

// Four consecutive elements from p + i (16 bytes for fp32, 8 for bf16/fp16) when aligned.
template <typename T>
__device__ __forceinline__ void load4(const T* p, int64_t i, float (&v)[4]) {
  if constexpr (sizeof(T) == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p + i);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(p + i);
    const T* h = reinterpret_cast<const T*>(&q);
    for (int j = 0; j < 4; ++j) v[j] = load(h, j);
  }
}

__device__ __forceinline__ float pow2_at_least(float s) {
  unsigned bits = __float_as_uint(s);
  if (isfinite(s) && (bits & 0x7FFFFFu) != 0) bits = (bits | 0x7FFFFFu) + 1;
  return __uint_as_float(bits);
}

__device__ __forceinline__ float tile_scale(float amax, bool finite, bool pow2) {
  if (!finite) return __int_as_float(0x7fc00000);  // NaN
  if (amax == 0.0f) return 1.0f;
  const float scale = fmaxf(__fdiv_rn(amax, kMax), FLT_MIN);
  return pow2 ? pow2_at_least(scale) : scale;
}

__device__ __forceinline__ uint8_t to_e4m3(float v, float scale) {
  // SATFINITE clamps to +-448 and keeps NaN: the CPU kernel's clamp-then-round.
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(__fdiv_rn(v, scale), __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

template <typename T>
__global__ void rows_kernel(const T* x, int64_t rows, int64_t k, bool pow2, uint8_t* data, float* scales) {
  const int64_t tiles_per_row = (k + kTile - 1) / kTile;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (tile >= rows * tiles_per_row) return;
  const int lane = threadIdx.x % 32;
  const int64_t row = tile / tiles_per_row, col0 = tile % tiles_per_row * kTile;
  const int64_t base = row * k + col0, n = imin(kTile, k - col0);
  float v[4];
  const bool vector = n == kTile && (reinterpret_cast<uintptr_t>(x + base) % (4 * sizeof(T))) == 0;
  if (vector) {
    load4(x, base + lane * 4, v);
  } else {
    for (int j = 0; j < 4; ++j) v[j] = lane * 4 + j < n ? load(x, base + lane * 4 + j) : 0.0f;
  }
  float amax = 0.0f;
  bool finite = true;
  for (int j = 0; j < 4; ++j) {
    const float a = fabsf(v[j]);
    finite &= a <= FLT_MAX;
    amax = fmaxf(amax, a);
  }
  amax = warp_max(amax);
  finite = __all_sync(0xffffffffu, finite);
  const float scale = tile_scale(amax, finite, pow2);
  if (lane == 0) scales[tile] = scale;
  for (int j = 0; j < 4; ++j) {
    if (lane * 4 + j < n) data[base + lane * 4 + j] = to_e4m3(v[j], scale);
  }
}

// Block: 128 rows x 32 columns of x, staged in shared memory; warp w handles columns w, w + 8, ...
template <typename T>
__global__ void rows_transposed_kernel(const T* x, int64_t rows, int64_t k, bool pow2, uint8_t* data, float* scales) {
  __shared__ float tile[kTile][33];
  // Row bands on grid x (up to 2^31 - 1 of them), 32-column blocks on grid y.
  const int64_t band = blockIdx.x;
  const int64_t row0 = band * kTile, col0 = static_cast<int64_t>(blockIdx.y) * 32;
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  for (int i = threadIdx.x; i < kTile * 32; i += blockDim.x) {
    const int r = i / 32, c = i % 32;
    const int64_t gr = row0 + r, gc = col0 + c;
    tile[r][c] = gr < rows && gc < k ? load(x, gr * k + gc) : 0.0f;
  }
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int c = warp; c < 32; c += warps) {
    const int64_t gc = col0 + c;
    if (gc >= k) break;
    float amax = 0.0f;
    bool finite = true;
    for (int j = 0; j < 4; ++j) {
      const float a = fabsf(tile[lane * 4 + j][c]);
      finite &= a <= FLT_MAX;
      amax = fmaxf(amax, a);
    }
    amax = warp_max(amax);
    finite = __all_sync(0xffffffffu, finite);
    const float scale = tile_scale(amax, finite, pow2);
    if (lane == 0) scales[gc * row_tiles + band] = scale;
    for (int j = 0; j < 4; ++j) {
      const int64_t gr = row0 + lane * 4 + j;
      if (gr < rows) data[gc * rows + gr] = to_e4m3(tile[lane * 4 + j][c], scale);
    }
  }
}

// Block (256 threads) per 128x128 block: thread t covers column t % 128 of rows t / 128, +2, ...
// (a warp reads 32 consecutive columns of one row: coalesced).
template <typename T>
__global__ void blocks_kernel(const T* w, int64_t n, int64_t k, bool pow2, uint8_t* data, float* scales) {
  __shared__ float warp_amax[8];
  __shared__ int warp_finite[8];
  const int64_t row_tiles = (n + kTile - 1) / kTile, col_tiles = (k + kTile - 1) / kTile;
  const int64_t b = blockIdx.z, c = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x % kTile;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile + threadIdx.x / kTile;
  const int64_t r1 = imin(n, static_cast<int64_t>(blockIdx.y) * kTile + kTile), base = b * n * k;
  float amax = 0.0f;
  bool finite = true;
  if (c < k) {
    for (int64_t r = r0; r < r1; r += 2) {
      const float a = fabsf(load(w, base + r * k + c));
      finite &= a <= FLT_MAX;
      amax = fmaxf(amax, a);
    }
  }
  amax = warp_max(amax);
  finite = __all_sync(0xffffffffu, finite);
  if (threadIdx.x % 32 == 0) {
    warp_amax[threadIdx.x / 32] = amax;
    warp_finite[threadIdx.x / 32] = finite;
  }
  __syncthreads();
  float block_amax = 0.0f;
  bool block_finite = true;
  for (int i = 0; i < 8; ++i) {
    block_amax = fmaxf(block_amax, warp_amax[i]);
    block_finite &= warp_finite[i] != 0;
  }
  const float scale = tile_scale(block_amax, block_finite, pow2);
  if (threadIdx.x == 0) scales[(b * row_tiles + blockIdx.y) * col_tiles + blockIdx.x] = scale;
  if (c < k) {
    for (int64_t r = r0; r < r1; r += 2) data[base + r * k + c] = to_e4m3(load(w, base + r * k + c), scale);
  }
}

}  // namespace

cudaError_t fp8_quantize_rows(const void* x, Fp8Input dtype, int64_t rows, int64_t k, bool pow2, uint8_t* data,
                              float* scales, cudaStream_t stream) {
  const int64_t tiles = rows * ((k + kTile - 1) / kTile);
  if (tiles == 0) return cudaSuccess;
  constexpr int threads = 256;
  const int64_t blocks = (tiles + threads / 32 - 1) / (threads / 32);
  switch (dtype) {
    case Fp8Input::f32: rows_kernel<<<blocks, threads, 0, stream>>>(static_cast<const float*>(x), rows, k, pow2, data, scales); break;
    case Fp8Input::bf16: rows_kernel<<<blocks, threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), rows, k, pow2, data, scales); break;
    case Fp8Input::f16: rows_kernel<<<blocks, threads, 0, stream>>>(static_cast<const __half*>(x), rows, k, pow2, data, scales); break;
  }
  return cudaGetLastError();
}

cudaError_t fp8_quantize_rows_transposed(const void* x, Fp8Input dtype, int64_t rows, int64_t k, bool pow2,
                                         uint8_t* data, float* scales, cudaStream_t stream) {
  if (rows == 0 || k == 0) return cudaSuccess;
  if ((k + 31) / 32 > 65535) return cudaErrorInvalidValue;  // grid y; k up to 2M columns
  const dim3 grid(static_cast<unsigned>((rows + kTile - 1) / kTile), static_cast<unsigned>((k + 31) / 32));
  constexpr int threads = 256;
  switch (dtype) {
    case Fp8Input::f32: rows_transposed_kernel<<<grid, threads, 0, stream>>>(static_cast<const float*>(x), rows, k, pow2, data, scales); break;
    case Fp8Input::bf16: rows_transposed_kernel<<<grid, threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), rows, k, pow2, data, scales); break;
    case Fp8Input::f16: rows_transposed_kernel<<<grid, threads, 0, stream>>>(static_cast<const __half*>(x), rows, k, pow2, data, scales); break;
  }
  return cudaGetLastError();
}

cudaError_t fp8_quantize_blocks(const void* w, Fp8Input dtype, int64_t batch, int64_t n, int64_t k, bool pow2,
                                uint8_t* data, float* scales, cudaStream_t stream) {
  if (batch == 0 || n == 0 || k == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((k + kTile - 1) / kTile), static_cast<unsigned>((n + kTile - 1) / kTile),
                  static_cast<unsigned>(batch));
  constexpr int threads = 256;
  switch (dtype) {
    case Fp8Input::f32: blocks_kernel<<<grid, threads, 0, stream>>>(static_cast<const float*>(w), n, k, pow2, data, scales); break;
    case Fp8Input::bf16: blocks_kernel<<<grid, threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(w), n, k, pow2, data, scales); break;
    case Fp8Input::f16: blocks_kernel<<<grid, threads, 0, stream>>>(static_cast<const __half*>(w), n, k, pow2, data, scales); break;
  }
  return cudaGetLastError();
}

}  // namespace latentmoe::kernels
