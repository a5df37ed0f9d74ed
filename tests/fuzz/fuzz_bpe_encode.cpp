// The BPE encoder on arbitrary bytes with the bundled tokenizer: invalid UTF-8 is rejected by
// name; valid text must round-trip exactly (byte-level BPE loses nothing).
#include "fuzz_common.h"
#include "latentmoe/data/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace latentmoe;
  static const data::Tokenizer tokenizer =
      data::Tokenizer::from_file(LATENTMOE_SOURCE_DIR "/data/tokenizer/python-docs-bpe-8k.json");
  const std::string_view text = fuzz::as_text(data, size);
  std::vector<int32_t> ids;
  try {
    ids = tokenizer.encode(text);
  } catch (const data::TokenizerError&) {
    return 0;
  }
  if (tokenizer.decode(ids) != text) fuzz::property_violated("decode(encode(text)) != text");
  return 0;
}
