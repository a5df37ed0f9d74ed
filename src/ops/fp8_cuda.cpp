// CUDA side of FP8: the quantization ops on torch's current stream, and the blockwise-scaled
// GEMM through torch's cuBLASLt path (at::_scaled_mm with 1x128 / 128x128 scales, sm_90).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <atomic>
#include <mutex>

#include "fp8_quantize.cuh"
#include "ops/fp8_gemm.h"
#include "ops/fp8_shapes.h"

namespace latentmoe::ops::fp8 {

namespace {

kernels::Fp8Input input_kind(const at::Tensor& x, const char* op) {
  switch (x.scalar_type()) {
    case at::kFloat: return kernels::Fp8Input::f32;
    case at::kBFloat16: return kernels::Fp8Input::bf16;
    case at::kHalf: return kernels::Fp8Input::f16;
    default: TORCH_CHECK(false, op, ": the input must be float32, bfloat16 or float16, got ", x.scalar_type());
  }
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_cuda(const at::Tensor& x_in, bool pow2) {
  TORCH_CHECK(x_in.dim() >= 1, "fp8_quantize_rows: the input needs at least 1 dimension, got a scalar");
  const auto kind = input_kind(x_in, "fp8_quantize_rows");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t k = x.size(-1), rows = k == 0 ? 0 : x.numel() / k;
  at::Tensor data = at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scales = at::empty(row_scale_shape(x.sizes()), x.options().dtype(at::kFloat));
  check_launch(kernels::fp8_quantize_rows(x.const_data_ptr(), kind, rows, k, pow2,
                                          static_cast<uint8_t*>(data.mutable_data_ptr()), scales.mutable_data_ptr<float>(),
                                          at::cuda::getCurrentCUDAStream()),
               "fp8_quantize_rows");
  return {data, scales};
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_transposed_cuda(const at::Tensor& x_in, bool pow2) {
  TORCH_CHECK(x_in.dim() == 2, "fp8_quantize_rows_transposed: x must be [rows, columns], got ", x_in.sizes());
  const auto kind = input_kind(x_in, "fp8_quantize_rows_transposed");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), k = x.size(1);
  at::Tensor data = at::empty({k, rows}, x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scales = at::empty({k, tile_count(rows)}, x.options().dtype(at::kFloat));
  check_launch(kernels::fp8_quantize_rows_transposed(x.const_data_ptr(), kind, rows, k, pow2,
                                                     static_cast<uint8_t*>(data.mutable_data_ptr()),
                                                     scales.mutable_data_ptr<float>(), at::cuda::getCurrentCUDAStream()),
               "fp8_quantize_rows_transposed");
  return {data, scales};
}

std::tuple<at::Tensor, at::Tensor> quantize_blocks_cuda(const at::Tensor& w_in, bool pow2) {
  TORCH_CHECK(w_in.dim() >= 2, "fp8_quantize_blocks: the input needs at least 2 dimensions, got ", w_in.sizes());
  const auto kind = input_kind(w_in, "fp8_quantize_blocks");
  const c10::cuda::CUDAGuard guard(w_in.device());
  const at::Tensor w = w_in.contiguous();
  const int64_t n = w.size(-2), k = w.size(-1), batch = n * k == 0 ? 0 : w.numel() / (n * k);
  at::Tensor data = at::empty(w.sizes(), w.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scales = at::empty(block_scale_shape(w.sizes()), w.options().dtype(at::kFloat));
  check_launch(kernels::fp8_quantize_blocks(w.const_data_ptr(), kind, batch, n, k, pow2,
                                            static_cast<uint8_t*>(data.mutable_data_ptr()),
                                            scales.mutable_data_ptr<float>(), at::cuda::getCurrentCUDAStream()),
               "fp8_quantize_blocks");
  return {data, scales};
}

// "Outer-dim-major" (stride 1 along dim 0): the layout cuBLASLt reads 1x128 scales in.
at::Tensor outer_major(const at::Tensor& s) { return s.t().contiguous().t(); }

// 128x128 scales [N/128, K/128] with the row stride padded to a multiple of 4 (what torch's
// blockwise check asks for), returned as B's [K/128, N/128] view.
at::Tensor block_scales_for_b(const at::Tensor& s) {
  const int64_t rows = s.size(0), cols = s.size(1), padded = (cols + 3) / 4 * 4;
  at::Tensor storage = at::zeros({rows, padded}, s.options());
  storage.narrow(1, 0, cols).copy_(s);
  return storage.narrow(1, 0, cols).t();
}

std::atomic<int64_t> g_calls{0};

}  // namespace

int64_t cuda_scaled_mm_calls() { return g_calls.load(); }

std::optional<at::Tensor> scaled_mm_cuda(const Operand& a, const Operand& b, at::ScalarType out_dtype) {
  const auto* props = at::cuda::getCurrentDeviceProperties();
  if (props->major != 9) return std::nullopt;  // blockwise scaled_mm is an sm_90 cuBLASLt feature
  const int64_t m = a.q.data.size(0), k = a.q.data.size(1), n = b.q.data.size(0);
  // cuBLASLt FP8: K and N multiples of 16; blockwise scales need whole 128-wide K tiles.
  if (m == 0 || k % 128 != 0 || n % 16 != 0) return std::nullopt;
  const bool tensorwise = a.tiling == Tiling::tensor && b.tiling == Tiling::tensor;
  if (!tensorwise && (a.tiling != Tiling::rows || b.tiling == Tiling::tensor)) return std::nullopt;
  const c10::cuda::CUDAGuard guard(a.q.data.device());
  const at::Tensor mat_a = a.q.data.contiguous(), mat_b = b.q.data.contiguous().t();  // [M, K] row-, [K, N] column-major
  const at::Tensor scale_a = tensorwise ? a.q.scales.reshape({}) : outer_major(a.q.scales);  // [M, K/128]
  // [K/128, N/128] for 128x128 blocks, [K/128, N] for B's 1x128 tiles (the weight gradient).
  const at::Tensor scale_b = tensorwise                     ? b.q.scales.reshape({})
                             : b.tiling == Tiling::blocks ? block_scales_for_b(b.q.scales)
                                                          : b.q.scales.t().contiguous();
  try {
    at::Tensor out = at::_scaled_mm(mat_a, mat_b, scale_a, scale_b, std::nullopt, std::nullopt, out_dtype);
    ++g_calls;
    return out;
  } catch (const c10::Error& e) {
    // A layout or dtype this torch build's blockwise path refuses: emulate, and say so once.
    static std::once_flag warned;
    std::call_once(warned, [&] {
      TORCH_WARN("fp8: at::_scaled_mm refused a blockwise GEMM (", m, "x", k, "x", n, ", out ", out_dtype,
                 "); these GEMMs are emulated (dequantize + fp32 GEMM). torch said: ", e.what_without_backtrace());
    });
    return std::nullopt;
  }
}

TORCH_LIBRARY_IMPL(latentmoe, CUDA, m) {
  m.impl("fp8_quantize_rows", &quantize_rows_cuda);
  m.impl("fp8_quantize_rows_transposed", &quantize_rows_transposed_cuda);
  m.impl("fp8_quantize_blocks", &quantize_blocks_cuda);
}

}  // namespace latentmoe::ops::fp8
