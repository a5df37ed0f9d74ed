// The latentmoe operator library: every custom op's schema, in one place. Each op's kernels are
// registered next to their code (src/ops/<op>.cpp for CPU and Autograd, src/ops/<op>_cuda.cpp for
// CUDA). Python loads the same kernels with torch.ops.load_library("build/liblatentmoe_ops.so").
#include <torch/library.h>

TORCH_LIBRARY(latentmoe, m) {
  m.def("expert_token_counts(Tensor expert_ids, int num_experts) -> Tensor");

  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  // Forward that also returns the per-row 1/rms (fp32, x's leading shape) for the backward.
  m.def("rms_norm_forward(Tensor x, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rms_norm_backward(Tensor grad, Tensor x, Tensor weight, Tensor inv_rms) -> (Tensor, Tensor)");

  m.def("rotary_embedding(Tensor x, Tensor cos, Tensor sin, bool interleaved) -> Tensor");
  m.def("rotary_embedding_backward(Tensor grad, Tensor cos, Tensor sin, bool interleaved) -> Tensor");

  m.def("linear_cross_entropy(Tensor hidden, Tensor weight, Tensor labels, int ignore_index, int chunk_rows=0) -> Tensor");
  // Loss sum and, with with_grad, d(loss sum)/d(hidden) and d(loss sum)/d(weight).
  m.def("linear_cross_entropy_forward(Tensor hidden, Tensor weight, Tensor labels, int ignore_index, int chunk_rows, "
        "bool with_grad) -> (Tensor, Tensor, Tensor)");
  // Per-row loss and, with with_grad, softmax - onehot (zero rows for ignored labels).
  m.def("cross_entropy_rows(Tensor logits, Tensor labels, int ignore_index, bool with_grad) -> (Tensor, Tensor)");

  m.def("swiglu(Tensor gate, Tensor up) -> Tensor");
  m.def("swiglu_backward(Tensor grad, Tensor gate, Tensor up) -> (Tensor, Tensor)");
  // gate_up [..., 2 x width]: gate then up in each row.
  m.def("swiglu_packed(Tensor gate_up) -> Tensor");
  m.def("swiglu_packed_backward(Tensor grad, Tensor gate_up) -> Tensor");

  // e4m3 data and fp32 scales (x ~= data * scale): per 1x128 tile of the last dim, per 128x128
  // block of the last two (ops/fp8.h).
  m.def("fp8_quantize_rows(Tensor x, bool pow2_scales) -> (Tensor, Tensor)");
  m.def("fp8_quantize_blocks(Tensor w, bool pow2_scales) -> (Tensor, Tensor)");
  // x [M, K] -> x^T [K, M] quantized per 1x128 tile of x^T's rows.
  m.def("fp8_quantize_rows_transposed(Tensor x, bool pow2_scales) -> (Tensor, Tensor)");

  // Rows grouped by expert (group_sizes[e] consecutive rows for expert e) times weight[e]^T.
  m.def("grouped_linear(Tensor x, Tensor weight, int[] group_sizes) -> Tensor");
  m.def("grouped_linear_backward(Tensor grad, Tensor x, Tensor weight, int[] group_sizes, bool need_x, "
        "bool need_weight) -> (Tensor, Tensor)");

  // positions [tokens, top_k]: the sorted row of each (token, choice); weights [tokens, top_k] fp32.
  m.def("moe_permute(Tensor tokens, Tensor positions, Tensor? weights=None) -> Tensor");
  m.def("moe_unpermute(Tensor sorted, Tensor positions, Tensor? weights=None) -> Tensor");
  m.def("moe_unpermute_weight_grad(Tensor grad, Tensor sorted, Tensor positions) -> Tensor");

  // The gate after its GEMM: (expert_ids, gate_weights, scores, counts); see ops/moe_router.h.
  m.def("moe_router(Tensor logits, Tensor bias, int top_k, int n_group, int topk_group, bool sigmoid, bool normalize, "
        "float scaling) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("moe_router_backward(Tensor? grad_gates, Tensor? grad_scores, Tensor scores, Tensor expert_ids, bool sigmoid, "
        "bool normalize, float scaling) -> Tensor");
}
