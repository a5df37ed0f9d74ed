// Shared by the libFuzzer targets: each parser may reject its input only with its own error type
// (which names the file and the problem); any other exception, crash, leak or sanitizer report
// is a finding. Inputs that are rejected cleanly are returned from early.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace latentmoe::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Fails the run (libFuzzer records the input) when a property that must hold does not.
[[noreturn]] void property_violated(const std::string& what);

}  // namespace latentmoe::fuzz
