// UTF-8 well-formedness, shared by the tokenizer (its input) and the config loader (its strings).
#pragma once

#include <cstddef>
#include <string_view>

namespace latentmoe {

// Offset of the first byte that is not part of well-formed UTF-8 (no overlongs, no surrogates,
// <= U+10FFFF), or std::string_view::npos.
size_t first_invalid_utf8(std::string_view text);

}  // namespace latentmoe
