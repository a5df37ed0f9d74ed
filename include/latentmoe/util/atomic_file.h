// Small files read or written whole: text outputs (golden files, run reports) written so a reader
// never sees half a file, and the one reader every parser of a whole file uses.
#pragma once

#include <optional>
#include <string>

namespace latentmoe {

// Writes text to path.tmp.<pid> (creating parent directories), then renames it over path.
// Throws std::runtime_error naming the file on failure.
void write_text_file_atomically(const std::string& path, const std::string& text);

// The whole file (bytes as they are), or nullopt when it cannot be opened: the caller throws its
// own error type naming the file.
std::optional<std::string> read_text_file(const std::string& path);

}  // namespace latentmoe
