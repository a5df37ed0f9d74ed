// Megatron .idx: header, sizes, pointers, document indices. An accepted index must describe
// contiguous sequences whose bytes sum to bin_bytes.
#include "fuzz_common.h"
#include "latentmoe/data/indexed_dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace latentmoe;
  try {
    const data::IndexedDatasetIndex index = data::parse_indexed_dataset_index(fuzz::as_text(data, size), "fuzz.idx");
    const int64_t item = static_cast<int64_t>(data::token_dtype_size(index.dtype));
    int64_t end = 0, tokens = 0;
    for (size_t i = 0; i < index.lengths.size(); ++i) {
      if (index.lengths[i] < 0 || index.pointers[i] != end) fuzz::property_violated("accepted a non-contiguous index");
      end += index.lengths[i] * item;
      tokens += index.lengths[i];
    }
    if (end != index.bin_bytes || tokens != index.total_tokens) fuzz::property_violated("byte or token total is wrong");
  } catch (const data::DataError&) {
  }
  return 0;
}
