// SwiGLU with its saved input in e4m3 (DeepSeek-V3 report §3.3, low-precision storage: "we cache
// the inputs of the SwiGLU operator ... in FP8 with our fine-grained quantization"): the forward
// is the exact op; the backward dequantizes the cached input and differentiates there.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "latentmoe/ops/fp8_linear.h"
#include "latentmoe/ops/swiglu.h"
#include "ops/fp8_gemm.h"
#include "ops/op_handle.h"

namespace latentmoe::ops::fp8 {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

class Fp8SwigluFunction : public torch::autograd::Function<Fp8SwigluFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up, Recipe recipe) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const Operand g = quantize(gate, Tiling::rows, recipe), u = quantize(up, Tiling::rows, recipe);
    ctx->save_for_backward({g.q.data, g.q.scales, u.q.data, u.q.scales});
    ctx->saved_data["tiling"] = static_cast<int64_t>(g.tiling);
    ctx->saved_data["dtype"] = gate.scalar_type();
    return ops::swiglu(gate, up);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto tiling = static_cast<Tiling>(ctx->saved_data["tiling"].toInt());
    const at::ScalarType dtype = ctx->saved_data["dtype"].toScalarType();
    const at::Tensor gate = dequantize({{s[0], s[1]}, tiling}, dtype), up = dequantize({{s[2], s[3]}, tiling}, dtype);
    using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&);
    static const auto op = find_op<Signature>("latentmoe::swiglu_backward");
    auto [dgate, dup] = op.call(grads[0], gate, up);
    return {dgate, dup, at::Tensor()};
  }
};

class Fp8SwigluPackedFunction : public torch::autograd::Function<Fp8SwigluPackedFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate_up, Recipe recipe) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const Operand c = quantize(gate_up, Tiling::rows, recipe);
    ctx->save_for_backward({c.q.data, c.q.scales});
    ctx->saved_data["tiling"] = static_cast<int64_t>(c.tiling);
    ctx->saved_data["dtype"] = gate_up.scalar_type();
    return ops::swiglu_packed(gate_up);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor gate_up = dequantize({{s[0], s[1]}, static_cast<Tiling>(ctx->saved_data["tiling"].toInt())},
                                          ctx->saved_data["dtype"].toScalarType());
    static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>("latentmoe::swiglu_packed_backward");
    return {op.call(grads[0], gate_up), at::Tensor()};
  }
};

}  // namespace

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up, const Recipe& recipe) {
  TORCH_CHECK(recipe.enabled(), "fp8::swiglu needs an FP8 recipe (precision.fp8 = blockwise or tensorwise)");
  return Fp8SwigluFunction::apply(gate, up, recipe);
}

at::Tensor swiglu_packed(const at::Tensor& gate_up, const Recipe& recipe) {
  TORCH_CHECK(recipe.enabled(), "fp8::swiglu_packed needs an FP8 recipe (precision.fp8 = blockwise or tensorwise)");
  return Fp8SwigluPackedFunction::apply(gate_up, recipe);
}

}  // namespace latentmoe::ops::fp8
