// The schema itself: every config field's key and one-line doc, declared once. Defaults live in
// the struct initializers (include/latentmoe/config/config.h); docs/configuration.md is generated
// from this file (`latentmoe config --docs`), and a test fails when the two drift.
#include "latentmoe/config/config.h"

namespace latentmoe::config {

void RopeScalingConfig::describe(FieldVisitor& v) {
  v.field({"type", &type, "Context-extension method applied to the rotary frequencies", {"none", "yarn"}});
  v.field({"factor", &factor, "YaRN scale factor: target context / original_max_position_embeddings"});
  v.field({"original_max_position_embeddings", &original_max_position_embeddings,
           "Context length the rotary frequencies were trained for"});
  v.field({"beta_fast", &beta_fast, "YaRN: rotations per context above which dims are extrapolated"});
  v.field({"beta_slow", &beta_slow, "YaRN: rotations per context below which dims are interpolated"});
  v.field({"mscale", &mscale, "YaRN attention-temperature coefficient (numerator of the cos/sin factor; 0 = absent)"});
  v.field({"mscale_all_dim", &mscale_all_dim,
           "YaRN coefficient: the softmax scale gets mscale(factor, this)^2 (0 = absent, as in HF)"});
}

void ModelConfig::describe(FieldVisitor& v) {
  v.field({"vocab_size", &vocab_size, "Number of token ids (embedding rows and head outputs)"});
  v.field({"hidden_size", &hidden_size, "Residual stream width"});
  v.field({"intermediate_size", &intermediate_size, "SwiGLU inner width of the dense FFN layers"});
  v.field({"num_hidden_layers", &num_hidden_layers, "Decoder blocks in the main model (MTP not counted)"});
  v.field({"num_attention_heads", &num_attention_heads, "Query heads of the attention layers"});
  v.section("attention", "Attention layer: `type` picks a registered attention type, whose own keys follow",
            [this](FieldVisitor& s) { attention.describe(s); });
  v.field({"n_routed_experts", &n_routed_experts, "Routed experts per MoE layer (0 = all layers dense)"});
  v.field({"num_experts_per_tok", &num_experts_per_tok, "Routed experts chosen per token (top-k)"});
  v.field({"norm_topk_prob", &norm_topk_prob, "Normalize the chosen experts' gate weights to sum to 1"});
  v.section("router", "MoE router: `type` picks a registered router type, whose own keys follow",
            [this](FieldVisitor& s) { router.describe(s); });
  v.section("ffn", "FFN of the MoE layers: `type` picks a registered MoE layer type, whose own keys follow",
            [this](FieldVisitor& s) { ffn.describe(s); });
  v.field({"first_k_dense_replace", &first_k_dense_replace, "Leading layers that use the dense FFN instead of MoE"});
  v.field({"rms_norm_eps", &rms_norm_eps, "RMSNorm epsilon"});
  v.field({"max_position_embeddings", &max_position_embeddings, "Longest sequence the model is built for"});
  v.field({"rope_theta", &rope_theta, "Rotary base frequency"});
  v.field({"rope_interleave", &rope_interleave,
           "Rotary dims are interleaved pairs (DeepSeek checkpoints); false = rotate-half layout"});
  v.section("rope_scaling", "Rotary context extension (YaRN)",
            [this](FieldVisitor& s) { rope_scaling.describe(s); });
  v.field({"attention_bias", &attention_bias, "Bias terms on the attention projections"});
  v.field({"num_nextn_predict_layers", &num_nextn_predict_layers, "Multi-Token Prediction depth D (0 = off)"});
  v.field({"init_std", &init_std, "Std of the normal init of every weight matrix (paper: 0.006)"});
}

void BatchRampConfig::describe(FieldVisitor& v) {
  v.field({"start", &start,
           "Global batch (sequences) of the first step; 0 = no ramp (Megatron: --rampup-batch-size START INCR SAMPLES)"});
  v.field({"increment", &increment,
           "Sequences added at each ramp increment (the last one may be partial, stopping at train.global_batch_size)"});
  v.field({"tokens", &tokens,
           "Consumed tokens over which the batch grows linearly, in increments, from start to train.global_batch_size"});
}

void TrainConfig::describe(FieldVisitor& v) {
  v.field({"steps", &steps,
           "Optimizer steps to run; exactly one of steps and tokens is > 0 (setting one in a file or --set clears the "
           "other)"});
  v.field({"tokens", &tokens,
           "Tokens to train on instead of a step count: the run ends after the first step at which the consumed "
           "tokens reach this (0 = sized by train.steps)"});
  v.field({"global_batch_size", &global_batch_size, "Sequences per optimizer step, over all data-parallel ranks"});
  v.field({"micro_batch_size", &micro_batch_size, "Sequences per forward/backward on one rank"});
  v.field({"grad_accum_steps", &grad_accum_steps,
           "Micro-batches per optimizer step on one rank; 0 = global / (micro x data-parallel ranks), the only "
           "choice with a batch ramp"});
  v.section("batch_ramp", "Batch-size ramp (DeepSeek-V3: 3072 to 15360 sequences over the first 469B tokens)",
            [this](FieldVisitor& s) { batch_ramp.describe(s); });
  v.field({"seq_len", &seq_len, "Tokens per training sequence"});
  v.field({"grad_clip_norm", &grad_clip_norm, "Global gradient-norm clip (0 = off)"});
  v.field({"device", &device, "Where to train; auto = cuda when available", {"auto", "cpu", "cuda"}});
  v.field({"recompute", &recompute,
           "Activation recomputation: none; selective = per layer the attention core (norms, MLA down/up "
           "projections, rotary, SDPA) and every MLP's and expert group's gate/up GEMMs + SwiGLU rerun in "
           "the backward; full = every decoder block reruns whole (only block inputs kept)",
           {"none", "selective", "full"}});
  v.field({"mtp_loss_weight", &mtp_loss_weight, "MTP loss weight lambda (loss adds lambda/D x sum of MTP CEs)"});
  v.field({"mtp_loss_weight_final", &mtp_loss_weight_final,
           "MTP lambda after mtp_loss_weight_switch_tokens (DeepSeek-V3: 0.3, then 0.1)"});
  v.field({"mtp_loss_weight_switch_tokens", &mtp_loss_weight_switch_tokens,
           "Tokens after which lambda becomes mtp_loss_weight_final (0 = never)"});
  v.field({"seq_aux_loss_alpha", &seq_aux_loss_alpha, "Sequence-wise balance loss weight alpha (0 = off)"});
  v.field({"router_z_loss_weight", &router_z_loss_weight, "Router z-loss weight (0 = off)"});
  v.field({"bias_update_speed", &bias_update_speed,
           "Aux-loss-free balancing speed gamma: b += gamma*sign(mean_load - load) per step (0 = off)"});
  v.field({"bias_update_freeze_tokens", &bias_update_freeze_tokens,
           "Tokens after which the expert biases stop updating (0 = never freeze)"});
  v.field({"eval_interval", &eval_interval, "Steps between validation passes (0 = only at the end)"});
  v.field({"eval_batches", &eval_batches, "Micro-batches per validation pass"});
  v.field({"spike_zscore", &spike_zscore,
           "Skip the update when the loss z-score over the last spike_window steps exceeds this (0 = off)"});
  v.field({"spike_window", &spike_window, "Steps of loss history for the spike detector"});
  v.field({"spike_action", &spike_action,
           "On a loss spike: skip the update; rerun the step from the same state (also on a non-finite step): "
           "bit-identical = the data or the model (samples logged, update skipped), different = a machine fault "
           "(stops naming the rank, exit 7); stop (exit 6)",
           {"skip", "rerun", "stop"}});
  v.field({"replica_check_interval", &replica_check_interval,
           "Steps between bit-exact comparisons of every replica of the replicated parameters (and, without "
           "ZeRO-1, their AdamW moments); also before each checkpoint. A divergence stops naming the rank "
           "(exit 7). 0 = off"});
  v.field({"collapse_warn_steps", &collapse_warn_steps,
           "Warn when a routed expert gets no tokens for this many consecutive steps (0 = off)"});
  v.field({"init_optimizer", &init_optimizer,
           "`train --init-from`: carry the source checkpoint's AdamW moments and step count into the new stage "
           "(a continuation, as DeepSeek-V3's extension stages), or reset them (fine-tuning from weights only)",
           {"carry", "reset"}});
}

void OptimizerConfig::describe(FieldVisitor& v) {
  v.field({"type", &type, "Optimizer", {"adamw"}});
  v.field({"lr", &lr, "Peak learning rate"});
  v.field({"beta1", &beta1, "AdamW first-moment decay"});
  v.field({"beta2", &beta2, "AdamW second-moment decay"});
  v.field({"eps", &eps, "AdamW epsilon"});
  v.field({"weight_decay", &weight_decay, "Decoupled weight decay"});
  v.field({"decay_1d_params", &decay_1d_params, "Also decay norms, biases and other 1-D tensors"});
  v.field({"moments_dtype", &moments_dtype,
           "Storage of AdamW's two moments: fp32, or bf16 (half the optimizer memory; each update computes in fp32 "
           "and rounds the moments to nearest even). Checkpoints hold fp32 moments either way, so a run resumes "
           "under the other setting",
           {"fp32", "bf16"}});
}

void ScheduleConfig::describe(FieldVisitor& v) {
  v.field({"type", &type,
           "LR schedule: constant after warmup; cosine to min_lr; multiphase = DeepSeek (warmup, "
           "constant, cosine decay, step-downs)",
           {"constant", "cosine", "multiphase"}});
  v.field({"unit", &unit, "Unit of decay_start, decay_length and stepdown_at", {"steps", "tokens"}});
  v.field({"warmup", &warmup, "Linear warmup from 0 to optimizer.lr, in steps"});
  v.field({"decay_start", &decay_start, "multiphase: where the cosine decay starts (0 = right after warmup)"});
  v.field({"decay_length", &decay_length, "Cosine decay length (0 = until the end of training)"});
  v.field({"min_lr", &min_lr, "LR at the end of the cosine decay"});
  v.field({"stepdown_at", &stepdown_at, "multiphase: boundaries after the decay where the LR steps down"});
  v.field({"stepdown_lr", &stepdown_lr, "multiphase: LR from each stepdown_at boundary on"});
}

void DataConfig::describe(FieldVisitor& v) {
  v.field({"tokenizer", &tokenizer, "HF tokenizer.json; empty = the bundled default tokenizer"});
  v.field({"paths", &paths, "Dataset prefixes (.bin/.idx); empty = the bundled default corpus"});
  v.field({"weights", &weights, "Blend weights, one per path (empty = proportional to size)"});
  v.field({"valid_fraction", &valid_fraction, "Fraction of documents held out for validation"});
  v.field({"fim_rate", &fim_rate,
           "Fill-in-the-middle: probability that a document segment of a training sample is cut at two random "
           "characters and rearranged (needs FIM tokens in the tokenizer; DeepSeek-V3: 0.1)"});
  v.field({"fim_spm_rate", &fim_spm_rate,
           "Of the FIM segments, the fraction arranged suffix-prefix-middle (SPM) instead of prefix-suffix-middle "
           "(PSM); Megatron's default 0.5, DeepSeek-V3 uses PSM only (0)"});
  v.field({"num_workers", &num_workers,
           "Background threads preparing the coming steps' training batches (reading, packing, FIM); 0 = on the "
           "training thread. The batches are the same either way"});
}

void ParallelConfig::describe(FieldVisitor& v) {
  v.field({"ep", &ep, "Expert-parallel degree: consecutive ranks sharing the routed experts (divides the world size and n_routed_experts)"});
  v.field({"zero_stage", &zero_stage, "0 = replicated optimizer state, 1 = ZeRO-1 sharded over data-parallel ranks"});
  v.field({"backend", &backend,
           "c10d backend; auto = gloo while training runs on the CPU; nccl stages tensors through cuda:LOCAL_RANK",
           {"auto", "gloo", "nccl"}});
  v.field({"bucket_size_mb", &bucket_size_mb,
           "Gradient bucket size in MB: each bucket's reduction starts during backward once its gradients are ready"});
  v.field({"timeout_s", &timeout_s, "Collective timeout before a rank gives up"});
}

void PrecisionConfig::describe(FieldVisitor& v) {
  v.field({"compute_dtype", &compute_dtype, "Dtype of forward/backward compute", {"fp32", "bf16"}});
  v.field({"master_dtype", &master_dtype, "Dtype of master weights and optimizer state", {"fp32"}});
  v.field({"cpu_low_precision_gemm", &cpu_low_precision_gemm,
           "bf16 GEMMs and attention on a CPU: native = torch's bf16 kernels; emulated = fp32 kernels on operands "
           "rounded to bf16, result rounded to bf16 (a bf16 tensor-core GEMM's rounding; for CPUs without bf16 "
           "dot-product instructions, where torch's bf16 GEMM is 20-150x slower than fp32); auto = measure both once "
           "at start and emulate when native is over 2x slower",
           {"auto", "native", "emulated"}});
  v.field({"fp8", &fp8,
           "FP8 (e4m3) training as DeepSeek-V3: every projection inside the decoder blocks (attention, MLPs, shared "
           "and routed experts) quantizes both GEMM inputs in forward and backward; embedding, output head, router "
           "gates, norms and attention's softmax core stay in compute_dtype, master weights and moments in fp32. "
           "blockwise = activations and gradients per 1x128 tile, weights per 128x128 block (the recipe); "
           "tensorwise = one scale per tensor (a baseline that shows what fine-grained scaling buys). On a CPU the "
           "GEMMs are emulated exactly (quantize, dequantize, fp32 GEMM); see docs/fp8.md",
           {"none", "blockwise", "tensorwise"}});
  v.field({"fp8_pow2_scales", &fp8_pow2_scales,
           "Round every FP8 scale up to a power of two (UE8M0-style scale hardware); needs precision.fp8"});
}

void CheckpointConfig::describe(FieldVisitor& v) {
  v.field({"dir", &dir, "Directory holding one sub-directory per saved step"});
  v.field({"interval", &interval, "Steps between checkpoints (0 = only at the end)"});
  v.field({"keep_last", &keep_last, "Committed checkpoints to keep; older ones are deleted"});
}

void LoggingConfig::describe(FieldVisitor& v) {
  v.field({"level", &level, "Console/file log level", {"trace", "debug", "info", "warn", "error"}});
  v.field({"interval", &interval, "Steps between metric lines"});
  v.field({"file", &file, "Also log to this file (empty = console only)"});
  v.field({"dir", &dir, "Run directory for metrics (JSONL, TensorBoard events)"});
  v.field({"jsonl", &jsonl, "Write metrics.jsonl in logging.dir"});
  v.field({"tensorboard", &tensorboard, "Write TensorBoard event files in logging.dir"});
  v.field({"peak_tflops", &peak_tflops, "Peak TFLOP/s per device for MFU (0 = do not report MFU)"});
}

void Config::describe(FieldVisitor& v) {
  v.field({"name", &name, "Run name (used in log lines and default paths)"});
  v.field({"seed", &seed, "Seed for initialization and data order"});
  v.section("model", "Architecture (DeepSeek-V3 naming, as in HF config.json)", [this](FieldVisitor& s) { model.describe(s); });
  v.section("train", "Training loop, batch and losses", [this](FieldVisitor& s) { train.describe(s); });
  v.section("optimizer", "Optimizer", [this](FieldVisitor& s) { optimizer.describe(s); });
  v.section("schedule", "Learning-rate schedule", [this](FieldVisitor& s) { schedule.describe(s); });
  v.section("data", "Tokenizer and datasets", [this](FieldVisitor& s) { data.describe(s); });
  v.section("parallel", "Distributed layout (world size comes from the launcher)",
            [this](FieldVisitor& s) { parallel.describe(s); });
  v.section("precision", "Numeric formats", [this](FieldVisitor& s) { precision.describe(s); });
  v.section("checkpoint", "Checkpointing", [this](FieldVisitor& s) { checkpoint.describe(s); });
  v.section("logging", "Logs and metrics", [this](FieldVisitor& s) { logging.describe(s); });
}

}  // namespace latentmoe::config
