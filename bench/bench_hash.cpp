// Checksums over a checkpoint-sized buffer: SHA-256 (checkpoint manifests), the 64-bit
// fingerprint (replica checks) and CRC32C (event files). Bytes/s is the figure of merit.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "latentmoe/util/hash.h"

namespace {
std::vector<uint8_t> buffer(size_t size) {
  std::vector<uint8_t> data(size);
  uint64_t x = 1;
  for (auto& b : data) b = static_cast<uint8_t>((x = latentmoe::splitmix64(x)) >> 56);
  return data;
}

template <typename Fn>
void run(benchmark::State& state, Fn&& fn) {
  const auto data = buffer(static_cast<size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(fn(data.data(), data.size()));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void sha256(benchmark::State& s) { run(s, [](const void* p, size_t n) { return latentmoe::sha256_hex(p, n); }); }
void fingerprint(benchmark::State& s) { run(s, [](const void* p, size_t n) { return latentmoe::fingerprint64(p, n); }); }
void crc32c(benchmark::State& s) { run(s, [](const void* p, size_t n) { return latentmoe::crc32c(p, n); }); }
}  // namespace

BENCHMARK(sha256)->Arg(64 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK(fingerprint)->Arg(64 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK(crc32c)->Arg(1 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
