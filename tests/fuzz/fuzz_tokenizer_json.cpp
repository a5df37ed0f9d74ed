// tokenizer.json loading: any JSON document either loads or is rejected by name; a loaded
// tokenizer must encode a fixed text and decode every id without crashing.
#include <algorithm>

#include "fuzz_common.h"
#include "latentmoe/data/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace latentmoe;
  try {
    const data::Tokenizer tokenizer = data::Tokenizer::from_json_text(fuzz::as_text(data, size), "fuzz-tokenizer.json");
    const std::vector<int32_t> ids = tokenizer.encode("Hello wörld 123 <|end_of_text|>\n\tdef f(x): return x ** 2  # ünïcode ✓ 😀");
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer.vocab_size()) fuzz::property_violated("encode produced an id outside the vocabulary");
    }
    (void)tokenizer.decode(ids);
    std::vector<int32_t> every(static_cast<size_t>(std::min<int64_t>(tokenizer.vocab_size(), 4096)));
    for (size_t i = 0; i < every.size(); ++i) every[i] = static_cast<int32_t>(i);
    (void)tokenizer.decode(every);
  } catch (const data::TokenizerError&) {
  }
  return 0;
}
