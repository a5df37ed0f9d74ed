// Every fused op against its ATen reference (the spec): forward and backward, fp32 and bf16,
// awkward shapes (width 1, odd widths, one row, no rows, non-contiguous input), thread-count
// independence and the errors.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "latentmoe/ops/grouped_linear.h"
#include "latentmoe/ops/linear_cross_entropy.h"
#include "latentmoe/ops/moe_permute.h"
#include "latentmoe/ops/moe_router.h"
#include "latentmoe/ops/rms_norm.h"
#include "latentmoe/ops/rotary.h"
#include "latentmoe/ops/swiglu.h"

namespace ops = latentmoe::ops;

namespace {
double tolerance(at::ScalarType t) { return t == at::kFloat ? 1e-5 : 1e-2; }

// max |got - want| relative to max |want| (elementwise relative error is meaningless near 0).
double relative_error(const at::Tensor& got, const at::Tensor& want) {
  if (want.numel() == 0) return 0.0;
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const double scale = std::max(w.abs().max().item<double>(), 1e-30);
  return (g - w).abs().max().item<double>() / scale;
}

void expect_close(const at::Tensor& got, const at::Tensor& want, at::ScalarType dtype, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << what;
  EXPECT_LE(relative_error(got, want), tolerance(dtype)) << what;
}

at::Tensor leaf(const at::Tensor& t) { return t.detach().clone().set_requires_grad(true); }

// Runs fn on fresh leaves of the inputs, backpropagates `grad`, returns {output, input grads...}.
template <typename Fn>
std::vector<at::Tensor> run_with_grads(Fn&& fn, const std::vector<at::Tensor>& inputs, const at::Tensor& grad) {
  std::vector<at::Tensor> leaves;
  for (const auto& t : inputs) leaves.push_back(leaf(t));
  const at::Tensor out = fn(leaves);
  out.backward(grad);
  std::vector<at::Tensor> result{out.detach()};
  for (const auto& l : leaves) result.push_back(l.grad());
  return result;
}
}  // namespace

TEST(RmsNormOp, MatchesReferenceForwardAndBackward) {
  at::manual_seed(11);
  const std::vector<std::vector<int64_t>> shapes{{1, 1}, {3, 7}, {1, 129}, {0, 16}, {2, 5, 513}, {4, 33, 128}, {2, 4096}};
  for (const auto& shape : shapes) {
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      for (auto weight_dtype : {at::kFloat, dtype}) {
        const std::string what = "shape " + c10::str(at::IntArrayRef(shape)) + " " + c10::toString(dtype) +
                                 " weight " + c10::toString(weight_dtype);
        const at::Tensor x = at::randn(shape).mul(3).to(dtype);
        const at::Tensor w = (at::rand({shape.back()}) + 0.5).to(weight_dtype);
        const at::Tensor g = at::randn(shape).to(dtype);
        const auto fused = run_with_grads([](auto& in) { return ops::rms_norm(in[0], in[1], 1e-6); }, {x, w}, g);
        const auto ref = run_with_grads([](auto& in) { return ops::rms_norm_reference(in[0], in[1], 1e-6); }, {x, w}, g);
        expect_close(fused[0], ref[0], dtype, what + " forward");
        if (shape.back() == 1) {
          // Width 1: y = w*sign(x) up to eps, so dx ~ w*g*eps/|x|^3 is the difference of two equal
          // terms in both implementations (no relative accuracy); it must vanish next to w*g/|x|.
          const at::Tensor scale = (g.to(at::kFloat) * w.to(at::kFloat) / x.to(at::kFloat).abs()).abs();
          EXPECT_TRUE((fused[1].to(at::kFloat).abs() <= scale * 0.05 + 1e-6).all().item<bool>()) << what;
        } else {
          expect_close(fused[1], ref[1], dtype, what + " dx");
        }
        // dw sums over every row: bf16 rounding of each row's terms adds up, fp32 math inside both.
        expect_close(fused[2], ref[2], weight_dtype == at::kFloat ? dtype : weight_dtype, what + " dw");
      }
    }
  }
}

TEST(RmsNormOp, NonContiguousInputAndEpsilonAreHonoured) {
  at::manual_seed(12);
  const at::Tensor x = at::randn({64, 10}).t();  // [10, 64] strided
  const at::Tensor w = at::rand({64});
  expect_close(ops::rms_norm(x, w, 1e-2), ops::rms_norm_reference(x, w, 1e-2), at::kFloat, "transposed");
  EXPECT_FALSE(at::allclose(ops::rms_norm(x * 1e-3, w, 1e-2), ops::rms_norm(x * 1e-3, w, 1e-8)));
}

TEST(RmsNormOp, SameBitsWhateverTheThreadCount) {
  at::manual_seed(13);
  const at::Tensor x = at::randn({3001, 96}), w = at::rand({96}), g = at::randn({3001, 96});
  const int threads = at::get_num_threads();
  std::vector<std::vector<at::Tensor>> runs;
  for (int n : {1, 2, 3}) {
    at::set_num_threads(n);
    runs.push_back(run_with_grads([](auto& in) { return ops::rms_norm(in[0], in[1], 1e-6); }, {x, w}, g));
  }
  at::set_num_threads(threads);
  for (size_t r = 1; r < runs.size(); ++r) {
    for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_TRUE(at::equal(runs[0][i], runs[r][i])) << "run " << r << " output " << i;
  }
}

TEST(RmsNormOp, BadInputIsNamed) {
  const auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([] { ops::rms_norm(at::randn({2, 8}), at::ones({7}), 1e-6); }).find("weight must be [8]"),
            std::string::npos);
  EXPECT_NE(message([] { ops::rms_norm(at::ones({2, 8}, at::kLong), at::ones({8}), 1e-6); }).find("x must be float32"),
            std::string::npos);
  EXPECT_NE(message([] { ops::rms_norm(at::randn({2, 8}), at::ones({8}, at::kBFloat16), 1e-6); })
                .find("weight must be float32 or x's dtype"),
            std::string::npos);
}

TEST(SwiGluOp, MatchesReferenceForwardAndBackward) {
  at::manual_seed(21);
  const std::vector<std::vector<int64_t>> shapes{{1}, {0, 8}, {7, 3}, {1, 385}, {3, 17, 64}, {70001}};
  for (const auto& shape : shapes) {
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      const std::string what = "shape " + c10::str(at::IntArrayRef(shape)) + " " + c10::toString(dtype);
      const at::Tensor a = at::randn(shape).mul(4).to(dtype), b = at::randn(shape).to(dtype);
      const at::Tensor g = at::randn(shape).to(dtype);
      const auto fused = run_with_grads([](auto& in) { return ops::swiglu(in[0], in[1]); }, {a, b}, g);
      const auto ref = run_with_grads([](auto& in) { return ops::swiglu_reference(in[0], in[1]); }, {a, b}, g);
      for (size_t i = 0; i < 3; ++i) expect_close(fused[i], ref[i], dtype, what + " output " + std::to_string(i));
    }
  }
}

TEST(SwiGluOp, ExtremeInputsStayFinite) {
  const at::Tensor a = at::tensor({-1000.0f, -88.0f, 0.0f, 88.0f, 1000.0f}), b = at::ones({5});
  const auto fused = run_with_grads([](auto& in) { return ops::swiglu(in[0], in[1]); }, {a, b}, at::ones({5}));
  const auto ref = run_with_grads([](auto& in) { return ops::swiglu_reference(in[0], in[1]); }, {a, b}, at::ones({5}));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(at::isfinite(fused[i]).all().item<bool>()) << i;
    expect_close(fused[i], ref[i], at::kFloat, "extreme " + std::to_string(i));
  }
}

TEST(SwiGluOp, BadInputIsNamed) {
  EXPECT_THROW(ops::swiglu(at::randn({2, 3}), at::randn({3, 2})), c10::Error);
  EXPECT_THROW(ops::swiglu(at::randn({2, 3}), at::randn({2, 3}).to(at::kBFloat16)), c10::Error);
  EXPECT_THROW(ops::swiglu(at::ones({2}, at::kLong), at::ones({2}, at::kLong)), c10::Error);
}

TEST(SwiGluOp, PackedMatchesReferenceForwardAndBackward) {
  at::manual_seed(22);
  const std::vector<std::vector<int64_t>> shapes{{2}, {0, 8}, {7, 6}, {1, 770}, {3, 17, 128}};
  for (const auto& shape : shapes) {
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      const std::string what = "packed shape " + c10::str(at::IntArrayRef(shape)) + " " + c10::toString(dtype);
      const at::Tensor gate_up = at::randn(shape).mul(3).to(dtype);
      std::vector<int64_t> out_shape = shape;
      out_shape.back() /= 2;
      const at::Tensor g = at::randn(out_shape).to(dtype);
      const auto fused = run_with_grads([](auto& in) { return ops::swiglu_packed(in[0]); }, {gate_up}, g);
      const auto ref = run_with_grads([](auto& in) { return ops::swiglu_packed_reference(in[0]); }, {gate_up}, g);
      for (size_t i = 0; i < 2; ++i) expect_close(fused[i], ref[i], dtype, what + " output " + std::to_string(i));
    }
  }
  EXPECT_THROW(ops::swiglu_packed(at::randn({2, 3})), c10::Error);  // odd width: no gate/up split
}

// Empty experts, one-row experts, odd widths, no rows at all; both CPU strategies.
TEST(GroupedLinearOp, MatchesReferenceForwardAndBackward) {
  at::manual_seed(31);
  struct Case {
    std::vector<int64_t> sizes;
    int64_t in, out;
  };
  const std::vector<Case> cases{{{0, 3, 0, 1, 7}, 5, 9}, {{0, 0}, 4, 3}, {{1}, 1, 1}, {{64, 1, 130, 0}, 128, 96}};
  for (auto impl : {ops::GroupedGemmImpl::per_group_gemm, ops::GroupedGemmImpl::torch_grouped_mm}) {
    ops::set_cpu_grouped_gemm_impl(impl);
    for (const auto& c : cases) {
      for (auto dtype : {at::kFloat, at::kBFloat16}) {
        int64_t rows = 0;
        for (int64_t n : c.sizes) rows += n;
        const std::string what = "groups " + c10::str(at::IntArrayRef(c.sizes)) + " in " + std::to_string(c.in) +
                                 " out " + std::to_string(c.out) + " " + c10::toString(dtype) + " impl " +
                                 std::to_string(static_cast<int>(impl));
        const at::Tensor x = at::randn({rows, c.in}).to(dtype);
        const at::Tensor w = at::randn({static_cast<int64_t>(c.sizes.size()), c.out, c.in}).div(4).to(dtype);
        const at::Tensor g = at::randn({rows, c.out}).to(dtype);
        const auto sizes = c.sizes;
        const auto fused = run_with_grads([&](auto& in) { return ops::grouped_linear(in[0], in[1], sizes); }, {x, w}, g);
        const auto ref =
            run_with_grads([&](auto& in) { return ops::grouped_linear_reference(in[0], in[1], sizes); }, {x, w}, g);
        for (size_t i = 0; i < 3; ++i) {
          ASSERT_TRUE(fused[i].defined()) << what << " output " << i;
          expect_close(fused[i], ref[i], dtype, what + " output " + std::to_string(i));
        }
      }
    }
  }
  ops::set_cpu_grouped_gemm_impl(ops::GroupedGemmImpl::per_group_gemm);
}

TEST(GroupedLinearOp, BadInputIsNamed) {
  const at::Tensor x = at::randn({4, 3}), w = at::randn({2, 5, 3});
  EXPECT_THROW(ops::grouped_linear(x, w, std::vector<int64_t>{1, 2}), c10::Error);         // sums to 3, not 4
  EXPECT_THROW(ops::grouped_linear(x, w, std::vector<int64_t>{4}), c10::Error);            // one size, two experts
  EXPECT_THROW(ops::grouped_linear(x, w, std::vector<int64_t>{5, -1}), c10::Error);        // negative
  EXPECT_THROW(ops::grouped_linear(x, at::randn({2, 5, 4}), std::vector<int64_t>{2, 2}), c10::Error);  // in dims
  EXPECT_THROW(ops::grouped_linear(x.to(at::kBFloat16), w, std::vector<int64_t>{2, 2}), c10::Error);   // dtypes
  try {
    ops::grouped_linear(x, w, std::vector<int64_t>{1, 2});
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("sum to 3 rows but x has 4"), std::string::npos) << e.what();
  }
}

// Routing-like positions: tokens' choices sorted by expert id (stable), some experts empty.
TEST(MoePermuteOps, MatchReferenceForwardAndBackward) {
  at::manual_seed(41);
  struct Case {
    int64_t tokens, top_k, hidden;
  };
  for (const auto& c : std::vector<Case>{{1, 1, 1}, {0, 2, 8}, {7, 3, 5}, {33, 2, 128}, {5, 8, 129}}) {
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      const std::string what = "tokens " + std::to_string(c.tokens) + " top_k " + std::to_string(c.top_k) +
                               " hidden " + std::to_string(c.hidden) + " " + c10::toString(dtype);
      const at::Tensor ids = at::randint(0, 2 * c.top_k + 1, {c.tokens * c.top_k}, at::kLong);
      const at::Tensor positions = ops::moe_positions(ids.argsort(/*stable=*/true), c.top_k);
      const at::Tensor tokens = at::randn({c.tokens, c.hidden}).to(dtype);
      const at::Tensor sorted_grad = at::randn({c.tokens * c.top_k, c.hidden}).to(dtype);
      const auto fused = run_with_grads([&](auto& in) { return ops::moe_permute(in[0], positions); }, {tokens}, sorted_grad);
      const auto ref =
          run_with_grads([&](auto& in) { return ops::moe_permute_reference(in[0], positions); }, {tokens}, sorted_grad);
      for (size_t i = 0; i < 2; ++i) expect_close(fused[i], ref[i], dtype, what + " permute " + std::to_string(i));

      const at::Tensor sorted = at::randn({c.tokens * c.top_k, c.hidden}).to(dtype);
      const at::Tensor weights = at::rand({c.tokens, c.top_k}) + 0.1;
      const at::Tensor grad = at::randn({c.tokens, c.hidden}).to(dtype);
      const auto f2 = run_with_grads([&](auto& in) { return ops::moe_unpermute(in[0], positions, in[1]); },
                                     {sorted, weights}, grad);
      const auto r2 = run_with_grads([&](auto& in) { return ops::moe_unpermute_reference(in[0], positions, in[1]); },
                                     {sorted, weights}, grad);
      for (size_t i = 0; i < 3; ++i) {
        ASSERT_TRUE(f2[i].defined()) << what << " unpermute " << i;
        expect_close(f2[i], r2[i], i == 2 ? at::kFloat : dtype, what + " unpermute " + std::to_string(i));
      }
    }
  }
}

TEST(MoePermuteOps, BadPositionsAreNamed) {
  const at::Tensor tokens = at::randn({2, 4});
  EXPECT_THROW(ops::moe_permute(tokens, at::tensor({0, 0, 1, 2}, at::kLong).view({2, 2})), c10::Error);  // repeated
  EXPECT_THROW(ops::moe_permute(tokens, at::tensor({0, 1, 2, 4}, at::kLong).view({2, 2})), c10::Error);  // range
  EXPECT_THROW(ops::moe_permute(tokens, at::tensor({0, 1, 2}, at::kLong).view({3, 1})), c10::Error);     // rows
  EXPECT_THROW(ops::moe_unpermute(at::randn({3, 4}), at::tensor({0, 1, 2, 3}, at::kLong).view({2, 2}), at::ones({2, 2})),
               c10::Error);
  try {
    ops::moe_permute(tokens, at::tensor({0, 0, 1, 2}, at::kLong).view({2, 2}));
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("appears twice"), std::string::npos) << e.what();
  }
}

// Group-limited (sigmoid, normalized) and plain (softmax) routing, one token, more tokens than a
// count chunk, random biases; the gradient through the gates alone and through gates + scores.
TEST(MoeRouterOp, MatchesReferenceForwardAndBackward) {
  at::manual_seed(51);
  struct Case {
    int64_t tokens, experts;
    ops::RouterChoice choice;
  };
  const std::vector<Case> cases{{1, 8, {2, 4, 2, true, true, 2.5}},
                                {37, 16, {3, 1, 1, false, false, 1.0}},
                                {300, 64, {6, 8, 3, true, true, 2.5}},
                                {5, 6, {1, 3, 1, true, false, 1.0}},
                                {0, 8, {2, 4, 2, true, true, 1.0}}};
  for (const auto& c : cases) {
    for (bool with_scores : {false, true}) {
      const std::string what = "tokens " + std::to_string(c.tokens) + " experts " + std::to_string(c.experts) +
                               (with_scores ? " gates+scores" : " gates");
      const at::Tensor logits = at::randn({c.tokens, c.experts}).mul(2);
      const at::Tensor bias = at::randn({c.experts}).mul(0.1);
      const at::Tensor g_gates = at::randn({c.tokens, c.choice.top_k}), g_scores = at::randn({c.tokens, c.experts});
      std::vector<at::Tensor> got, want;
      for (bool fused : {true, false}) {
        const at::Tensor l = logits.clone().set_requires_grad(true);
        auto [ids, gates, scores, counts] =
            fused ? ops::moe_router(l, bias, c.choice) : ops::moe_router_reference(l, bias, c.choice);
        at::Tensor loss = (gates * g_gates).sum();
        if (with_scores) loss = loss + (scores * g_scores).sum();
        loss.backward();
        (fused ? got : want) = {ids, counts, gates.detach(), scores.detach(), l.grad()};
      }
      EXPECT_TRUE(at::equal(got[0], want[0])) << what << " expert ids";
      EXPECT_TRUE(at::equal(got[1], want[1])) << what << " counts";
      for (size_t i = 2; i < 5; ++i) expect_close(got[i], want[i], at::kFloat, what + " output " + std::to_string(i));
    }
  }
}

TEST(MoeRouterOp, BadInputIsNamed) {
  const at::Tensor logits = at::randn({3, 8}), bias = at::zeros({8});
  EXPECT_THROW(ops::moe_router(logits, bias, {2, 3, 1, true, true, 1.0}), c10::Error);  // 3 groups of 8 experts
  EXPECT_THROW(ops::moe_router(logits, bias, {5, 4, 2, true, true, 1.0}), c10::Error);  // 5 > 2 groups x 2
  EXPECT_THROW(ops::moe_router(logits.to(at::kBFloat16), bias, {2, 4, 2, true, true, 1.0}), c10::Error);
  EXPECT_THROW(ops::moe_router(logits, at::zeros({7}), {2, 4, 2, true, true, 1.0}), c10::Error);
}

TEST(RotaryOp, MatchesReferenceForwardAndBackward) {
  at::manual_seed(31);
  // {batch, heads, seq, rope}: one token, odd head/seq counts, the presets' rope widths.
  const std::vector<std::vector<int64_t>> shapes{{1, 1, 1, 2}, {2, 3, 5, 16}, {1, 4, 129, 32}, {3, 1, 7, 64}};
  for (const auto& shape : shapes) {
    const int64_t batch = shape[0], heads = shape[1], seq = shape[2], rope = shape[3];
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      for (bool interleaved : {true, false}) {
        for (int64_t angle_batch : {int64_t{1}, batch}) {
          const std::string what = "shape " + c10::str(at::IntArrayRef(shape)) + " " + c10::toString(dtype) +
                                   (interleaved ? " interleaved" : " half") + " angles for " +
                                   std::to_string(angle_batch);
          // x as the model sees it: the rope slice of a [b, s, h, nope + rope] projection, heads moved.
          const at::Tensor full = at::randn({batch, seq, heads, 8 + rope}).to(dtype);
          const at::Tensor x = full.transpose(1, 2).narrow(-1, 8, rope);
          const at::Tensor angles = at::rand({angle_batch, seq, rope / 2}) * 50;
          const at::Tensor cos = angles.cos() * 1.1, sin = angles.sin() * 1.1;  // a YaRN-like factor
          const at::Tensor g = at::randn(shape).to(dtype);
          const auto fused = run_with_grads(
              [&](auto& in) { return ops::rotary_embedding(in[0], cos, sin, interleaved); }, {x}, g);
          const auto ref = run_with_grads(
              [&](auto& in) { return ops::rotary_embedding_reference(in[0], cos, sin, interleaved); }, {x}, g);
          expect_close(fused[0], ref[0], dtype, what + " forward");
          expect_close(fused[1], ref[1], dtype, what + " dx");
          EXPECT_TRUE(fused[0].is_contiguous()) << what;
        }
      }
    }
  }
}

TEST(RotaryOp, IsARotation) {
  at::manual_seed(32);
  const at::Tensor x = at::randn({2, 3, 4, 8});
  const at::Tensor angles = at::rand({1, 4, 4}) * 10;
  const at::Tensor y = ops::rotary_embedding(x, angles.cos(), angles.sin(), /*interleaved=*/false);
  EXPECT_TRUE(at::allclose(y.norm(2, -1), x.norm(2, -1), 1e-5, 1e-5));  // lengths kept
  const at::Tensor zero = at::zeros({1, 4, 4});
  EXPECT_TRUE(at::equal(ops::rotary_embedding(x, zero + 1, zero, false), x));  // angle 0 = identity
}

TEST(RotaryOp, BadInputIsNamed) {
  const at::Tensor x = at::randn({1, 2, 3, 8});
  EXPECT_THROW(ops::rotary_embedding(x, at::ones({1, 3, 3}), at::ones({1, 3, 3}), true), c10::Error);  // width
  EXPECT_THROW(ops::rotary_embedding(x, at::ones({2, 3, 4}), at::ones({2, 3, 4}), true), c10::Error);  // batch
  EXPECT_THROW(ops::rotary_embedding(at::randn({2, 3, 7}), at::ones({1, 3, 3}), at::ones({1, 3, 3}), true),
               c10::Error);
  EXPECT_THROW(ops::rotary_embedding(x, at::ones({1, 3, 4}, at::kBFloat16), at::ones({1, 3, 4}, at::kBFloat16), true),
               c10::Error);
}

TEST(LinearCrossEntropyOp, MatchesReferenceForwardAndBackward) {
  at::manual_seed(41);
  // {rows, hidden, vocab, chunk rows}: one row, odd sizes, several chunks with a short last one.
  const std::vector<std::vector<int64_t>> cases{{1, 8, 5, 0}, {37, 24, 129, 0}, {37, 24, 129, 8}, {300, 64, 1000, 128},
                                                {0, 16, 32, 0}};
  for (const auto& c : cases) {
    const int64_t rows = c[0], hidden = c[1], vocab = c[2], chunk = c[3];
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      const std::string what = "case " + c10::str(at::IntArrayRef(c)) + " " + c10::toString(dtype);
      const at::Tensor h = at::randn({rows, hidden}).to(dtype);
      const at::Tensor w = (at::randn({vocab, hidden}) * 0.3).to(dtype);
      at::Tensor labels = at::randint(vocab, {rows}, at::kLong);
      if (rows > 3) labels.index_put_({at::indexing::Slice(0, rows, 3)}, -100);  // ignored rows
      const at::Tensor g = at::tensor(0.7f);
      const auto fused = run_with_grads(
          [&](auto& in) { return ops::linear_cross_entropy(in[0], in[1], labels, -100, chunk); }, {h, w}, g);
      const auto ref = run_with_grads(
          [&](auto& in) { return ops::linear_cross_entropy_reference(in[0], in[1], labels, -100); }, {h, w}, g);
      expect_close(fused[0], ref[0], at::kFloat, what + " loss");  // both accumulate in fp32
      if (rows == 0) continue;
      expect_close(fused[1], ref[1], dtype, what + " d hidden");
      expect_close(fused[2], ref[2], dtype, what + " d weight");
    }
  }
}

TEST(LinearCrossEntropyOp, WithoutGradientOnlyTheLoss) {
  at::manual_seed(42);
  const at::Tensor h = at::randn({50, 16}), w = at::randn({70, 16}), labels = at::randint(70, {50}, at::kLong);
  const at::NoGradGuard no_grad;
  const at::Tensor loss = ops::linear_cross_entropy(h, w, labels, -100, 7);
  EXPECT_LE(relative_error(loss, ops::linear_cross_entropy_reference(h, w, labels, -100)), 1e-5);
}

TEST(LinearCrossEntropyOp, NonFiniteLogitsGiveANonFiniteLoss) {
  at::Tensor h = at::randn({4, 8});
  h[2][3] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor w = at::randn({10, 8}), labels = at::randint(10, {4}, at::kLong);
  EXPECT_TRUE(std::isnan(ops::linear_cross_entropy(h, w, labels, -100).item<float>()));
  h[2][3] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(std::isfinite(ops::linear_cross_entropy(h, w, labels, -100).item<float>()));
}

TEST(LinearCrossEntropyOp, BadLabelIsNamed) {
  const at::Tensor h = at::randn({3, 8}), w = at::randn({10, 8});
  try {
    ops::linear_cross_entropy(h, w, at::tensor({1, 10, 2}, at::kLong), -100);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("label 10 is outside [0, 10)"), std::string::npos)
        << e.what_without_backtrace();
  }
  EXPECT_THROW(ops::linear_cross_entropy(h, w.to(at::kBFloat16), at::tensor({1, 2, 3}, at::kLong), -100), c10::Error);
}
