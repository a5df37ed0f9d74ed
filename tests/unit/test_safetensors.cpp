// safetensors: round trip of every dtype, sharded directories, and corrupt files rejected with a
// typed error naming the file and tensor, with nothing loaded into the model.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>

#include "latentmoe/io/model_io.h"
#include "latentmoe/io/safetensors.h"
#include "model_fixtures.h"
#include "test_util.h"

using latentmoe::io::SafetensorsError;
using latentmoe::io::SafetensorsFile;
using latentmoe::testing::expect_error_contains;
using latentmoe::testing::TempDir;
namespace io = latentmoe::io;

namespace {
// A raw file: 8-byte length, header text, `data_bytes` zero bytes.
std::string write_raw(const TempDir& dir, const std::string& name, const std::string& header, size_t data_bytes,
                      int64_t claimed_length = -1) {
  std::string bytes(8, '\0');
  uint64_t n = claimed_length >= 0 ? static_cast<uint64_t>(claimed_length) : header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  bytes += header;
  bytes.append(data_bytes, '\0');
  return dir.write(name, bytes);
}
}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto type : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble, at::kLong, at::kInt, at::kByte, at::kBool}) {
    tensors.emplace_back(std::string("t_") + c10::toString(type), at::randn({3, 5}).mul(3).to(type));
  }
  tensors.emplace_back("fp8", at::randn({4, 7}).to(at::kFloat8_e4m3fn));
  tensors.emplace_back("scalar", at::tensor(2.5));
  tensors.emplace_back("empty", at::empty({0, 3}));
  tensors.emplace_back("strided", at::randn({6, 4}).t());
  const std::string path = (dir.path() / "x.safetensors").string();
  io::save_safetensors(path, tensors, {{"format", "pt"}});
  const SafetensorsFile file(path);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    const at::Tensor back = file.tensor(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(back.to(at::kFloat), t.to(at::kFloat))) << name;
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Safetensors, CorruptFilesAreRejectedWithFileAndTensor) {
  TempDir dir;
  const std::string good_header = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  EXPECT_NO_THROW(SafetensorsFile(write_raw(dir, "ok.safetensors", good_header, 16)));

  const auto expect_bad = [&](const std::string& file, std::initializer_list<std::string> fragments) {
    expect_error_contains<SafetensorsError>([&] { SafetensorsFile f(file); }, fragments);
  };
  expect_bad(dir.write("tiny.safetensors", "abc"), {"tiny.safetensors: truncated: 3 bytes"});
  expect_bad(write_raw(dir, "long.safetensors", good_header, 16, 1ll << 40), {"long.safetensors", "exceeds the"});
  expect_bad(write_raw(dir, "past.safetensors", good_header, 0, static_cast<int64_t>(good_header.size()) + 100),
             {"past.safetensors", "runs past the end of the file"});
  expect_bad(write_raw(dir, "trunc.safetensors", good_header, 10),
             {"trunc.safetensors", "tensor 'a'", "exceed the data buffer of 10 bytes"});
  expect_bad(write_raw(dir, "json.safetensors", "{not json", 0), {"json.safetensors", "not valid JSON"});
  expect_bad(write_raw(dir, "size.safetensors", R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", 16),
             {"size.safetensors", "tensor 'a'", "holds 16 bytes but shape [2,3] x F32 needs 24"});
  expect_bad(write_raw(dir, "overlap.safetensors",
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       12),
             {"overlap.safetensors", "tensors 'a' [0, 8] and 'b' [4, 12] overlap"});
  expect_bad(write_raw(dir, "dtype.safetensors", R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", 2),
             {"dtype.safetensors", "tensor 'a'", "unknown dtype 'Q4'"});
  expect_bad(write_raw(dir, "neg.safetensors", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
             {"tensor 'a'", "negative or non-integer"});
  expect_bad(write_raw(dir, "rev.safetensors", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8),
             {"tensor 'a'", "reversed"});
  expect_bad(write_raw(dir, "fields.safetensors", R"({"a":{"dtype":"F32"}})", 0), {"tensor 'a'", "needs dtype, shape"});
  expect_bad(write_raw(dir, "array.safetensors", "[1,2]", 0), {"not a JSON object"});
  expect_bad((dir.path() / "missing.safetensors").string(), {"missing.safetensors: cannot open"});
}

TEST(Safetensors, ShardedIndexAndPathEscapes) {
  TempDir dir;
  io::save_safetensors((dir.path() / "s1.safetensors").string(), {{"a", at::ones({2})}});
  io::save_safetensors((dir.path() / "s2.safetensors").string(), {{"b", at::zeros({3})}});
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  const auto all = io::load_safetensors_dir(dir.path().string());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(at::equal(all.at("b"), at::zeros({3})));

  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})");
  expect_error_contains<SafetensorsError>([&] { io::load_safetensors_dir(dir.path().string()); },
                                          {"s2.safetensors", "tensor 'c'", "does not hold it"});
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "../outside.safetensors"}})");
  expect_error_contains<SafetensorsError>([&] { io::load_safetensors_dir(dir.path().string()); },
                                          {"shard path '../outside.safetensors'", "leaves the checkpoint directory"});
  dir.write("model.safetensors.index.json", R"({"nothing": 1})");
  expect_error_contains<SafetensorsError>([&] { io::load_safetensors_dir(dir.path().string()); }, {"weight_map"});
}

TEST(ModelIo, MismatchedStateLoadsNothing) {
  auto cfg = latentmoe::testing::tiny_model_config();
  latentmoe::model::DeepSeekV3 m(cfg);
  auto state = io::model_state(*m);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, t] : state) tensors[name] = at::full_like(t, 7.0);
  const at::Tensor before = m->lm_head->weight.clone();

  auto missing = tensors;
  missing.erase("model.norm.weight");
  expect_error_contains<SafetensorsError>([&] { io::load_model_state(*m, missing, "ckpt-dir"); },
                                          {"ckpt-dir: does not match", "missing tensors: model.norm.weight", "nothing was loaded"});
  auto extra = tensors;
  extra["model.layers.9.mlp.gate.weight"] = at::zeros({1});
  expect_error_contains<SafetensorsError>([&] { io::load_model_state(*m, extra, "ckpt-dir"); },
                                          {"unexpected tensors: model.layers.9.mlp.gate.weight"});
  auto wrong = tensors;
  wrong["lm_head.weight"] = at::zeros({3, 3});
  expect_error_contains<SafetensorsError>([&] { io::load_model_state(*m, wrong, "ckpt-dir"); },
                                          {"shape mismatches: lm_head.weight (file 3x3, model 61x32)"});
  EXPECT_TRUE(at::equal(m->lm_head->weight, before)) << "a failed load must not touch the model";

  io::load_model_state(*m, tensors, "ckpt-dir");
  EXPECT_TRUE(at::equal(m->lm_head->weight, at::full_like(before, 7.0)));
}

TEST(ModelIo, ModelDirectoryRoundTrip) {
  TempDir dir;
  latentmoe::config::Config cfg;
  cfg.model = latentmoe::testing::tiny_model_config();
  latentmoe::model::DeepSeekV3 m(cfg.model);
  {
    at::NoGradGuard g;
    m->model->layers[1]->as<latentmoe::model::DecoderBlockImpl>()->moe->as<latentmoe::model::DeepSeekMoEImpl>()->gate->e_score_correction_bias.fill_(0.25);
  }
  io::save_model_dir(dir.path().string(), cfg, *m);
  latentmoe::config::Config back_cfg;
  latentmoe::model::DeepSeekV3 back = io::load_model_dir(dir.path().string(), &back_cfg);
  EXPECT_TRUE(back_cfg == cfg);
  for (const auto& [name, t] : io::model_state(*m)) EXPECT_TRUE(at::equal(t, io::model_state(*back).at(name))) << name;
  expect_error_contains<SafetensorsError>([&] { io::load_model_dir((dir.path() / "nope").string()); },
                                          {"not a latentmoe model directory (no config.yaml)"});
}

// The torch-free header parser sizes tensors from its own table; the reader maps codes to torch
// types from another. Every code must be in both, with the same element size.
TEST(Safetensors, DtypeTablesAgree) {
  for (const std::string& code : io::safetensors_dtype_codes()) {
    const at::ScalarType type = io::scalar_type_from_safetensors(code);
    EXPECT_EQ(c10::elementSize(type), io::safetensors_element_size(code)) << code;
    EXPECT_EQ(io::safetensors_dtype(type), code);
  }
  expect_error_contains<SafetensorsError>([] { io::scalar_type_from_safetensors("F4"); },
                                          {"unknown dtype 'F4' (supported: F64, F32", "F8_E5M2)"});
}
