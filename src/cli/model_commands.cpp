// `latentmoe convert` (HF <-> latentmoe model directories) and `latentmoe forward` (logits,
// routing and gradients of one batch to a safetensors file: the hook for reference tests).
#include <ATen/ATen.h>
#include <torch/nn/functional/loss.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "latentmoe/io/model_io.h"
#include "latentmoe/io/safetensors.h"
#include "latentmoe/train/checkpoint.h"
#include "latentmoe/util/log.h"

namespace latentmoe::cli {

std::vector<std::vector<int64_t>> parse_id_rows(const std::string& text, const std::string& option) {
  std::vector<std::vector<int64_t>> rows(1);
  std::string number;
  bool pending_separator = false;  // a ',' or ';' that still needs an id after it
  const auto flush = [&] {
    if (number.empty()) return;
    pending_separator = false;
    try {
      size_t used = 0;
      rows.back().push_back(std::stoll(number, &used));
      if (used != number.size()) throw std::invalid_argument(number);
    } catch (const std::exception&) {
      throw ConfigError(option + ": '" + number + "' is not an integer token id (expected e.g. 1,2,3 or 1,2;3,4)");
    }
    number.clear();
  };
  const auto separator = [&](char c) {
    flush();
    if (pending_separator || rows.back().empty()) {
      throw ConfigError(fmt::format("{}: '{}' has an empty item before a '{}' (expected e.g. 1,2,3 or 1,2;3,4)", option, text, c));
    }
    pending_separator = true;
  };
  for (char c : text) {
    if (c == ' ') {
      flush();
    } else if (c == ',') {
      separator(c);
    } else if (c == ';') {
      separator(c);
      rows.emplace_back();
      pending_separator = false;
    } else {
      number += c;
    }
  }
  flush();
  if (pending_separator) throw ConfigError(fmt::format("{}: '{}' ends with a separator (expected e.g. 1,2,3 or 1,2;3,4)", option, text));
  for (const auto& r : rows) {
    if (r.empty() || r.size() != rows[0].size()) {
      throw ConfigError(option + ": every row needs the same, non-zero number of ids");
    }
  }
  return rows;
}

namespace {
// Writers never silently replace a directory's contents, and never touch a committed checkpoint.
void check_output_dir(const std::string& dir, const std::string& option, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  if (!fs::is_directory(dir, ec)) throw ConfigError(fmt::format("{} {}: exists and is not a directory", option, dir));
  if (fs::exists(fs::path(dir) / "COMMITTED", ec)) {
    throw ConfigError(fmt::format("{} {}: is a committed training checkpoint; it is never overwritten (choose another "
                                  "directory)", option, dir));
  }
  if (fs::is_empty(dir, ec) || force) return;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (names.size() == 3) {
      names.push_back("...");
      break;
    }
    names.push_back(entry.path().filename().string());
  }
  throw ConfigError(fmt::format("{} {}: the directory is not empty (holds {}); pass --force to overwrite it, or choose "
                                "an empty or new directory", option, dir, fmt::join(names, ", ")));
}
}  // namespace

at::Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows, int64_t vocab, const std::string& option) {
  at::Tensor ids = at::empty({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, at::kLong);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < rows[r].size(); ++c) {
      const int64_t id = rows[r][c];
      if (id < 0 || id >= vocab) {
        throw ConfigError(option + ": token id " + std::to_string(id) + " is outside [0, model.vocab_size=" +
                          std::to_string(vocab) + ")");
      }
      ids[static_cast<int64_t>(r)][static_cast<int64_t>(c)] = id;
    }
  }
  return ids;
}

void add_convert_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("convert", "Convert between HF transformers DeepseekV3 and latentmoe model directories");
  struct Args {
    std::string from_hf, out, checkpoint, to_hf;
    bool no_mtp = false, force = false, no_verify = false, fp8 = false;
  };
  auto a = std::make_shared<Args>();
  auto* from = cmd->add_option("--from-hf", a->from_hf, "HF directory (config.json + safetensors, sharded or not; FP8 ok)");
  cmd->add_option("--out", a->out, "latentmoe model directory to write (with --from-hf)");
  auto* ckpt = cmd->add_option("--checkpoint", a->checkpoint, "latentmoe model directory to read (with --to-hf)");
  auto* to = cmd->add_option("--to-hf", a->to_hf, "HF directory to write (with --checkpoint)");
  cmd->add_flag("--no-mtp", a->no_mtp, "With --to-hf: leave out the MTP modules (strict HF loaders)");
  auto* fp8 = cmd->add_flag("--fp8", a->fp8,
                "With --to-hf: write as the DeepSeek-V3 release, the decoder blocks' projections in e4m3 with "
                "128x128 weight_scale_inv and the rest in bf16 (FP8 inference engines load it)");
  cmd->add_flag("--force", a->force, "Write into a non-empty --out/--to-hf directory (never into a committed checkpoint)");
  cmd->add_flag("--no-verify", a->no_verify, "With --checkpoint: read a directory without a manifest.json (made by hand)");
  from->excludes(to);
  from->needs(cmd->get_option("--out"));
  to->needs(ckpt);
  fp8->needs(to);
  cmd->callback([a, &exit_code] {
    if (!a->from_hf.empty()) {
      check_output_dir(a->out, "--out", a->force);
      config::Config cfg;
      model::DeepSeekV3 m = io::import_hf(a->from_hf, &cfg.model);
      cfg.name = "imported";
      io::save_model_dir(a->out, cfg, *m);
      train::write_model_manifest(a->out, {"config.yaml", "model.safetensors"});
      LMOE_INFO("imported {} into {}", a->from_hf, a->out);
    } else if (!a->to_hf.empty()) {
      check_output_dir(a->to_hf, "--to-hf", a->force);
      if (!a->no_verify) train::verify_model_dir(a->checkpoint);
      config::Config cfg;
      model::DeepSeekV3 m = io::load_model_dir(a->checkpoint, &cfg);
      io::export_hf(a->to_hf, cfg.model, *m, !a->no_mtp, a->fp8);
      LMOE_INFO("exported {} to {}{}", a->checkpoint, a->to_hf, a->fp8 ? " (FP8 e4m3, 128x128 block scales)" : "");
    } else {
      throw ConfigError("convert: give --from-hf DIR --out DIR, or --checkpoint DIR --to-hf DIR");
    }
    exit_code = kExitOk;
  });
}

void add_init_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("init", "Write a randomly initialized model directory (config.yaml + model.safetensors)");
  auto args = std::make_shared<ConfigArgs>();
  auto out = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  args->add_to(*cmd);
  cmd->add_option("--out", *out, "Model directory to write")->required();
  cmd->add_flag("--force", *force, "Write into a non-empty directory (never into a committed checkpoint)");
  cmd->callback([args, out, force, &exit_code] {
    const config::Config cfg = args->load();
    check_output_dir(*out, "--out", *force);
    torch::manual_seed(static_cast<uint64_t>(cfg.seed));
    model::DeepSeekV3 m(cfg.model);
    io::save_model_dir(*out, cfg, *m);
    train::write_model_manifest(*out, {"config.yaml", "model.safetensors"});
    LMOE_INFO("initialized '{}' (seed {}, init_std {}) in {}", cfg.name, cfg.seed, cfg.model.init_std, *out);
    exit_code = kExitOk;
  });
}

void add_forward_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "forward", "Run one batch through a model and save logits, routing (and gradients) to a safetensors file");
  struct Args {
    std::string checkpoint, ids, out;
    bool grads = false, no_verify = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint", a->checkpoint, "latentmoe model directory")->required();
  cmd->add_option("--ids", a->ids, "Token ids: 1,2,3 (one row) or 1,2;3,4 (a batch)")->required();
  cmd->add_option("--out", a->out, "Output .safetensors")->required();
  cmd->add_flag("--grads", a->grads, "Also save the LM loss (next-token CE) and every parameter's gradient");
  cmd->add_flag("--no-verify", a->no_verify, "Read a model directory without a manifest.json (made by hand)");
  cmd->callback([a, &exit_code] {
    if (!a->no_verify) train::verify_model_dir(a->checkpoint);
    config::Config cfg;
    model::DeepSeekV3 m = io::load_model_dir(a->checkpoint, &cfg);
    const at::Tensor ids = ids_tensor(parse_id_rows(a->ids, "--ids"), cfg.model.vocab_size, "--ids");
    m->train(a->grads);
    model::ModelOutput out = m(ids, /*with_mtp=*/true);
    std::vector<std::pair<std::string, at::Tensor>> tensors{{"logits", out.logits}};
    for (size_t i = 0; i < out.mtp_logits.size(); ++i) tensors.emplace_back("mtp_logits." + std::to_string(i), out.mtp_logits[i]);
    for (size_t i = 0; i < out.routing.size(); ++i) {
      tensors.emplace_back("routing." + std::to_string(i), std::get<0>(out.routing[i].expert_ids.sort(-1)));
    }
    if (a->grads) {
      const int64_t vocab = cfg.model.vocab_size;
      const at::Tensor loss = torch::nn::functional::cross_entropy(
          out.logits.narrow(1, 0, ids.size(1) - 1).reshape({-1, vocab}), ids.narrow(1, 1, ids.size(1) - 1).reshape(-1));
      loss.backward();
      tensors.emplace_back("loss", loss.detach().reshape({1}));
      for (const auto& p : m->named_parameters()) {
        if (p.value().grad().defined()) tensors.emplace_back("grad." + p.key(), p.value().grad());
      }
    }
    io::save_safetensors(a->out, tensors);
    exit_code = kExitOk;
  });
}

}  // namespace latentmoe::cli
