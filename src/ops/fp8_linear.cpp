// FP8 projections: the autograd functions of fp8::linear and fp8::grouped_linear (what each GEMM
// quantizes is in fp8_linear.h) and the GEMM of two quantized operands.
#include "latentmoe/ops/fp8_linear.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>

#include "latentmoe/ops/fp8_stats.h"
#include "ops/fp8_gemm.h"

namespace latentmoe::ops::fp8 {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

const c10::DispatchKeySet kAutocastKeys({c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA});

// t [M, K] -> t^T [K, M] with 1x128 tiles along M (one scale under tensorwise).
Operand quantize_transposed(const at::Tensor& t, const Recipe& recipe) {
  if (recipe.scaling == Scaling::tensorwise) return {quantize_tensor(t.t(), recipe.pow2_scales), Tiling::tensor};
  return {quantize_rows_transposed(t, recipe.pow2_scales), Tiling::rows};
}

// While statistics are collected, records op = quantize(original) under layer/tensor.
const Operand& observed(const Operand& op, const at::Tensor& original, const std::string& layer, const char* tensor) {
  if (stats_enabled()) {
    const Operand unit{{at::ones_like(op.q.data), op.q.scales}, op.tiling};
    record_stats(layer, tensor, original, dequantize(op), dequantize(unit));
  }
  return op;
}

Operand quantize_observed(const at::Tensor& t, Tiling tiling, const Recipe& recipe, const std::string& layer,
                          const char* tensor) {
  return observed(quantize(t, tiling, recipe), t, layer, tensor);
}

// The transposed view of an operand quantized with 128x128 blocks or one scale (W -> W^T).
Operand transposed(const Operand& w) {
  TORCH_INTERNAL_ASSERT(w.tiling != Tiling::rows, "fp8: 1x128 tiles do not transpose");
  if (w.tiling == Tiling::tensor) return {{w.q.data.t(), w.q.scales}, w.tiling};
  return {{w.q.data.transpose(-2, -1), w.q.scales.transpose(-2, -1)}, w.tiling};
}

// The slice [first, first + n) of rows of an operand with 1x128 tiles (or one scale).
Operand rows_of(const Operand& a, int64_t first, int64_t n) {
  if (a.tiling == Tiling::tensor) return {{a.q.data.narrow(0, first, n), a.q.scales}, a.tiling};
  return {{a.q.data.narrow(0, first, n), a.q.scales.narrow(0, first, n)}, a.tiling};
}

// Expert e of a stacked [E, N, K] weight quantized per expert.
Operand expert_of(const Operand& w, int64_t e) {
  if (w.tiling == Tiling::tensor) return {{w.q.data[e], w.q.scales}, w.tiling};
  return {{w.q.data[e], w.q.scales[e]}, w.tiling};
}

at::ScalarType result_dtype(const at::Tensor& x) {
  const c10::DeviceType device = x.device().type();
  return at::autocast::is_autocast_enabled(device) ? at::autocast::get_autocast_dtype(device) : x.scalar_type();
}

class Fp8LinearFunction : public torch::autograd::Function<Fp8LinearFunction> {
 public:
  // keep_xt: a weight gradient will be wanted (grad mode on, weight requiring it); else x^T's copy
  // is not made (evaluation, a recompute region's first pass).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, Recipe recipe,
                            std::string layer, at::ScalarType out_dtype, bool keep_xt) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKeys);
    const int64_t k = x.size(-1), out = weight.size(0);
    const at::Tensor x2 = x.reshape({-1, k});
    const Operand xq = quantize_observed(x2, Tiling::rows, recipe, layer, "input");
    const Operand wq = quantize_observed(weight, Tiling::blocks, recipe, layer, "weight");
    const at::Tensor y = mm_quantized(xq, wq, out_dtype);
    // The wgrad's x^T, tiled along the tokens: the only copy of x the backward keeps.
    const Operand xt = keep_xt ? quantize_transposed(x2, recipe) : Operand{};
    ctx->save_for_backward({xt.q.data, xt.q.scales, weight});
    ctx->saved_data["recipe"] = static_cast<int64_t>(recipe.scaling);
    ctx->saved_data["pow2"] = recipe.pow2_scales;
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["x_dtype"] = x.scalar_type();
    ctx->saved_data["x_shape"] = x.sizes().vec();
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = out;
    return y.view(shape);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKeys);
    const auto saved = ctx->get_saved_variables();
    const Recipe recipe{.scaling = static_cast<Scaling>(ctx->saved_data["recipe"].toInt()),
                        .pow2_scales = ctx->saved_data["pow2"].toBool()};
    const std::string layer = ctx->saved_data["layer"].toStringRef();
    const at::Tensor& weight = saved[2];
    const Operand xt{{saved[0], saved[1]}, recipe.scaling == Scaling::tensorwise ? Tiling::tensor : Tiling::rows};
    const at::Tensor dy = grads[0].reshape({-1, weight.size(0)});
    at::Tensor dx, dweight;
    if (ctx->needs_input_grad(0)) {
      const Operand dyq = quantize_observed(dy, Tiling::rows, recipe, layer, "grad");
      const Operand wq = quantize(weight, Tiling::blocks, recipe);
      dx = mm_quantized(dyq, transposed(wq), ctx->saved_data["x_dtype"].toScalarType())
               .view(ctx->saved_data["x_shape"].toIntVector());
    }
    if (ctx->needs_input_grad(1)) {
      TORCH_CHECK(xt.q.data.defined(), "fp8::linear (", layer, "): the weight gradient was not planned for in the forward");
      const Operand dyt = quantize_transposed(dy, recipe);
      if (!ctx->needs_input_grad(0)) observed(dyt, dy.t(), layer, "grad");  // else the dgrad's copy was
      dweight = mm_quantized(dyt, xt, weight.scalar_type());
    }
    return {dx, dweight, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class Fp8GroupedLinearFunction : public torch::autograd::Function<Fp8GroupedLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            std::vector<int64_t> group_sizes, Recipe recipe, std::string layer,
                            at::ScalarType out_dtype, bool keep_xt) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKeys);
    TORCH_CHECK(x.dim() == 2 && weight.dim() == 3 && weight.size(2) == x.size(1) &&
                    static_cast<int64_t>(group_sizes.size()) == weight.size(0),
                "fp8 grouped_linear: x must be [rows, in] and weight [E, out, in] with E group sizes; got x ",
                x.sizes(), ", weight ", weight.sizes(), ", ", group_sizes.size(), " group sizes");
    const Operand xq = quantize_observed(x, Tiling::rows, recipe, layer, "input");
    const Operand wq = quantize_observed(weight, Tiling::blocks, recipe, layer, "weight");
    at::Tensor y = at::empty({x.size(0), weight.size(1)}, x.options().dtype(out_dtype));
    std::vector<at::Tensor> xt_data, xt_scales;  // per non-empty group: x_e^T tiled along its tokens
    int64_t first = 0;
    for (size_t e = 0; e < group_sizes.size(); ++e) {
      const int64_t n = group_sizes[e];
      if (n == 0) continue;
      y.narrow(0, first, n).copy_(mm_quantized(rows_of(xq, first, n), expert_of(wq, static_cast<int64_t>(e)), at::kFloat));
      if (keep_xt) {
        const Operand xt = quantize_transposed(x.narrow(0, first, n), recipe);
        xt_data.push_back(xt.q.data);
        xt_scales.push_back(xt.q.scales);
      }
      first += n;
    }
    TORCH_CHECK(first == x.size(0), "fp8 grouped_linear: group sizes sum to ", first, " but x has ", x.size(0), " rows");
    ctx->save_for_backward({weight});
    ctx->saved_data["xt_data"] = xt_data;
    ctx->saved_data["xt_scales"] = xt_scales;
    ctx->saved_data["group_sizes"] = group_sizes;
    ctx->saved_data["recipe"] = static_cast<int64_t>(recipe.scaling);
    ctx->saved_data["pow2"] = recipe.pow2_scales;
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["x_dtype"] = x.scalar_type();
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKeys);
    const at::Tensor weight = ctx->get_saved_variables()[0];
    const Recipe recipe{.scaling = static_cast<Scaling>(ctx->saved_data["recipe"].toInt()),
                        .pow2_scales = ctx->saved_data["pow2"].toBool()};
    const std::string layer = ctx->saved_data["layer"].toStringRef();
    const std::vector<int64_t> sizes = ctx->saved_data["group_sizes"].toIntVector();
    const auto xt_data = ctx->saved_data["xt_data"].toTensorVector();
    const auto xt_scales = ctx->saved_data["xt_scales"].toTensorVector();
    const Tiling row_tiling = recipe.scaling == Scaling::tensorwise ? Tiling::tensor : Tiling::rows;
    const at::Tensor& dy = grads[0];
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    TORCH_CHECK(!need_w || !xt_data.empty() || dy.size(0) == 0, "fp8::grouped_linear (", layer,
                "): the weight gradient was not planned for in the forward");
    at::Tensor dx = need_x ? at::empty({dy.size(0), weight.size(2)}, dy.options().dtype(ctx->saved_data["x_dtype"].toScalarType()))
                           : at::Tensor();
    at::Tensor dweight = need_w ? at::zeros_like(weight) : at::Tensor();
    const Operand dyq = need_x ? quantize_observed(dy, Tiling::rows, recipe, layer, "grad") : Operand{};
    const Operand wq = need_x ? quantize(weight, Tiling::blocks, recipe) : Operand{};
    int64_t first = 0;
    size_t group = 0;
    for (size_t e = 0; e < sizes.size(); ++e) {
      const int64_t n = sizes[e], expert = static_cast<int64_t>(e);
      if (n == 0) continue;
      if (need_x) {
        dx.narrow(0, first, n).copy_(mm_quantized(rows_of(dyq, first, n), transposed(expert_of(wq, expert)), at::kFloat));
      }
      if (need_w) {
        const Operand dyt = quantize_transposed(dy.narrow(0, first, n), recipe);
        if (!need_x) observed(dyt, dy.narrow(0, first, n).t(), layer, "grad");
        const Operand xt{{xt_data[group], xt_scales[group]}, row_tiling};
        dweight[expert].copy_(mm_quantized(dyt, xt, at::kFloat));
      }
      ++group;
      first += n;
    }
    return {dx, dweight, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

#ifndef LATENTMOE_WITH_CUDA
std::optional<at::Tensor> scaled_mm_cuda(const Operand&, const Operand&, at::ScalarType) { return std::nullopt; }
int64_t cuda_scaled_mm_calls() { return 0; }
#endif

Operand quantize(const at::Tensor& t, Tiling tiling, const Recipe& recipe) {
  if (recipe.scaling == Scaling::tensorwise) return {quantize_tensor(t, recipe.pow2_scales), Tiling::tensor};
  if (tiling == Tiling::blocks) return {quantize_blocks(t, recipe.pow2_scales), Tiling::blocks};
  return {quantize_rows(t, recipe.pow2_scales), Tiling::rows};
}

at::Tensor dequantize(const Operand& operand, at::ScalarType dtype) {
  switch (operand.tiling) {
    case Tiling::rows: return dequantize_rows(operand.q, dtype);
    case Tiling::blocks: return dequantize_blocks(operand.q, dtype);
    case Tiling::tensor: return dequantize_tensor(operand.q, dtype);
  }
  return {};
}

at::Tensor mm_quantized(const Operand& a, const Operand& b, at::ScalarType out_dtype) {
  if (a.q.data.is_cuda()) {
    if (std::optional<at::Tensor> out = scaled_mm_cuda(a, b, out_dtype)) return *out;
  }
  return at::mm(dequantize(a), dequantize(b).t()).to(out_dtype);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const Recipe& recipe, const std::string& layer) {
  TORCH_CHECK(recipe.enabled(), "fp8::linear needs an FP8 recipe (precision.fp8 = blockwise or tensorwise)");
  TORCH_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), "fp8::linear (", layer,
              "): x [..., ", weight.size(1), "] and weight [out, in] expected, got x ", x.sizes(), ", weight ",
              weight.sizes());
  // The bias is added outside the function (autograd gives its gradient): an undefined tensor
  // cannot be a custom function's input.
  const bool keep_xt = at::GradMode::is_enabled() && weight.requires_grad();
  const at::Tensor y = Fp8LinearFunction::apply(x, weight, recipe, layer, result_dtype(x), keep_xt);
  return bias && bias->defined() ? y + bias->to(y.scalar_type()) : y;
}

at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& weight, c10::IntArrayRef group_sizes,
                          const Recipe& recipe, const std::string& layer) {
  TORCH_CHECK(recipe.enabled(), "fp8::grouped_linear needs an FP8 recipe (precision.fp8 = blockwise or tensorwise)");
  const bool keep_xt = at::GradMode::is_enabled() && weight.requires_grad();
  return Fp8GroupedLinearFunction::apply(x, weight, group_sizes.vec(), recipe, layer, result_dtype(x), keep_xt);
}

}  // namespace latentmoe::ops::fp8
