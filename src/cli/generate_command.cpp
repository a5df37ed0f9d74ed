// `latentmoe generate`: sample from a model directory with the latent KV cache.
#include <fmt/format.h>

#include <cmath>
#include <iostream>

#include "commands.h"
#include "latentmoe/io/model_io.h"
#include "latentmoe/data/tokenizer.h"
#include "latentmoe/model/generate.h"
#include "latentmoe/train/checkpoint.h"
#include "latentmoe/train/trainer.h"

namespace latentmoe::cli {

void add_generate_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("generate", "Generate tokens from a model directory (greedy or top-p sampling)");
  struct Args {
    std::string checkpoint, prompt_ids, prompt, tokenizer;
    model::GenerateOptions options;
    int64_t stop = -1;
    bool no_verify = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint", a->checkpoint, "latentmoe model directory")->required();
  auto* ids_opt = cmd->add_option("--prompt-ids", a->prompt_ids, "Prompt token ids, e.g. 1,2,3");
  auto* text_opt = cmd->add_option("--prompt", a->prompt, "Prompt text (encoded with --tokenizer; output decoded)");
  ids_opt->excludes(text_opt);
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json for --prompt (default: data.tokenizer of the checkpoint's config)");
  cmd->add_option("--max-tokens", a->options.max_new_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", a->options.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", a->options.top_p, "Nucleus sampling mass in (0, 1]")->capture_default_str();
  cmd->add_option("--seed", a->options.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop-id", a->stop, "Stop after this token id (-1 = never)")->capture_default_str();
  cmd->add_flag("--no-verify", a->no_verify, "Read a model directory without a manifest.json (made by hand)");
  cmd->callback([a, &exit_code] {
    if (a->options.top_p <= 0.0 || a->options.top_p > 1.0) throw ConfigError("--top-p must be in (0, 1]");
    if (!(a->options.temperature >= 0.0) || !std::isfinite(a->options.temperature)) {
      throw ConfigError(fmt::format("--temperature {}: must be a finite number >= 0 (0 = greedy)", a->options.temperature));
    }
    if (a->options.max_new_tokens < 0) throw ConfigError("--max-tokens must be >= 0");
    if (!a->no_verify) train::verify_model_dir(a->checkpoint);
    config::Config cfg;
    model::DeepSeekV3 m = io::load_model_dir(a->checkpoint, &cfg);
    if (a->prompt_ids.empty() == a->prompt.empty()) throw ConfigError("generate: give --prompt TEXT or --prompt-ids IDS");
    if (a->stop < -1 || a->stop >= cfg.model.vocab_size) {
      throw ConfigError(fmt::format("--stop-id {}: must be a token id in [0, model.vocab_size={}) or -1 (never stop)", a->stop,
                                    cfg.model.vocab_size));
    }
    if (a->stop >= 0) a->options.stop_token = a->stop;
    if (!a->prompt.empty()) {
      const data::Tokenizer tok = data::Tokenizer::from_file(a->tokenizer.empty() ? train::resolve_tokenizer_path(cfg) : a->tokenizer);
      if (tok.vocab_size() > cfg.model.vocab_size) {
        throw ConfigError(fmt::format("--tokenizer has {} ids but the model's vocab_size is {}", tok.vocab_size(), cfg.model.vocab_size));
      }
      if (!a->options.stop_token) {
        if (const auto eos = tok.eos_id()) a->options.stop_token = *eos;
      }
      const std::vector<int32_t> encoded = tok.encode(a->prompt);
      if (encoded.empty()) throw ConfigError("--prompt encodes to no tokens");
      const std::vector<int64_t> out = model::generate(*m, std::vector<int64_t>(encoded.begin(), encoded.end()), a->options);
      std::cout << a->prompt << tok.decode(std::vector<int32_t>(out.begin(), out.end())) << "\n";
    } else {
      const at::Tensor prompt = ids_tensor(parse_id_rows(a->prompt_ids, "--prompt-ids"), cfg.model.vocab_size, "--prompt-ids");
      if (prompt.size(0) != 1) throw ConfigError("--prompt-ids: give one prompt (no ';')");
      std::vector<int64_t> ids(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
      const std::vector<int64_t> out = model::generate(*m, ids, a->options);
      for (size_t i = 0; i < out.size(); ++i) std::cout << (i ? "," : "") << out[i];
      std::cout << "\n";
    }
    exit_code = kExitOk;
  });
}

}  // namespace latentmoe::cli
