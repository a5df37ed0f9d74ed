// Checksums written by hand (no extra dependency): SHA-256 for checkpoint integrity manifests,
// CRC32C (Castagnoli) with TensorBoard's masking for event-file records.
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

}  // namespace latentmoe
