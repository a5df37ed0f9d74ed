#include "fuzz_common.h"

#include <cstdio>
#include <cstdlib>

namespace latentmoe::fuzz {

void property_violated(const std::string& what) {
  std::fprintf(stderr, "fuzz property violated: %s\n", what.c_str());
  std::abort();
}

}  // namespace latentmoe::fuzz
