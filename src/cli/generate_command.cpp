// `latentmoe generate`: sample from a model directory with the latent KV cache.
#include <iostream>

#include "commands.h"
#include "latentmoe/io/model_io.h"
#include "latentmoe/model/generate.h"

namespace latentmoe::cli {

std::vector<std::vector<int64_t>> parse_id_rows(const std::string& text, const std::string& option);
at::Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows, int64_t vocab, const std::string& option);

void add_generate_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("generate", "Generate tokens from a model directory (greedy or top-p sampling)");
  struct Args {
    std::string checkpoint, prompt_ids;
    model::GenerateOptions options;
    int64_t stop = -1;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint", a->checkpoint, "latentmoe model directory")->required();
  cmd->add_option("--prompt-ids", a->prompt_ids, "Prompt token ids, e.g. 1,2,3")->required();
  cmd->add_option("--max-tokens", a->options.max_new_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", a->options.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", a->options.top_p, "Nucleus sampling mass in (0, 1]")->capture_default_str();
  cmd->add_option("--seed", a->options.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop-id", a->stop, "Stop after this token id (-1 = never)")->capture_default_str();
  cmd->callback([a, &exit_code] {
    if (a->options.top_p <= 0.0 || a->options.top_p > 1.0) throw ConfigError("--top-p must be in (0, 1]");
    if (a->options.temperature < 0.0) throw ConfigError("--temperature must be >= 0");
    if (a->options.max_new_tokens < 0) throw ConfigError("--max-tokens must be >= 0");
    config::Config cfg;
    model::DeepSeekV3 m = io::load_model_dir(a->checkpoint, &cfg);
    const at::Tensor prompt = ids_tensor(parse_id_rows(a->prompt_ids, "--prompt-ids"), cfg.model.vocab_size, "--prompt-ids");
    if (prompt.size(0) != 1) throw ConfigError("--prompt-ids: give one prompt (no ';')");
    if (a->stop >= 0) a->options.stop_token = a->stop;
    std::vector<int64_t> ids(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
    const std::vector<int64_t> out = model::generate(*m, ids, a->options);
    for (size_t i = 0; i < out.size(); ++i) std::cout << (i ? "," : "") << out[i];
    std::cout << "\n";
    exit_code = kExitOk;
  });
}

}  // namespace latentmoe::cli
