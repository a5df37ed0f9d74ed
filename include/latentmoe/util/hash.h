// Checksums: SHA-256 (OpenSSL libcrypto, hardware-accelerated) for checkpoint integrity manifests,
// CRC32C (Castagnoli) with TensorBoard's masking for event-file records, a fast fingerprint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace latentmoe {

std::string sha256_hex(const void* data, size_t size);
// Streams the file; throws std::runtime_error naming it when unreadable.
std::string sha256_file_hex(const std::string& path);

uint32_t crc32c(const void* data, size_t size);
// TensorBoard/TFRecord mask: ((c >> 15) | (c << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

// Fast 64-bit fingerprint (not cryptographic) chained from `seed`: bit-exact comparisons of
// tensors across ranks and reruns (train/fault_check.h). Any changed bit changes it.
uint64_t fingerprint64(const void* data, size_t size, uint64_t seed = 0);
// splitmix64: every input bit affects every output bit (keyed shuffles, validation split, draws).
uint64_t splitmix64(uint64_t x);
// `value` folded into the running hash `seed`.
inline uint64_t mix64(uint64_t seed, uint64_t value) { return splitmix64(seed ^ value); }

}  // namespace latentmoe
