// Small text outputs (golden files, run reports) written so a reader never sees half a file.
#pragma once

#include <string>

namespace latentmoe {

// Writes text to path.tmp.<pid> (creating parent directories), then renames it over path.
// Throws std::runtime_error naming the file on failure.
void write_text_file_atomically(const std::string& path, const std::string& text);

}  // namespace latentmoe
