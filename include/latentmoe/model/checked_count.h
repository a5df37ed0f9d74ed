// int64 arithmetic that cannot wrap, for parameter counts: an absurd config gets an error naming
// the model section, not a negative count. Torch-free.
#pragma once

#include <cstdint>

#include "latentmoe/util/error.h"

namespace latentmoe::model {

class Count {
 public:
  Count(int64_t v = 0) : v_(v) {}  // NOLINT: implicit, so config fields mix in freely
  int64_t value() const { return v_; }
  friend Count operator+(Count a, Count b) { return checked(__builtin_add_overflow(a.v_, b.v_, &a.v_), a); }
  friend Count operator*(Count a, Count b) { return checked(__builtin_mul_overflow(a.v_, b.v_, &a.v_), a); }
  Count& operator+=(Count b) { return *this = *this + b; }

 private:
  static Count checked(bool overflowed, Count result) {
    if (overflowed) {
      throw ConfigError("model: the parameter count overflows 64-bit integers; the model section's sizes "
                        "(hidden_size, vocab_size, intermediate sizes, experts, layers) are far beyond any real model");
    }
    return result;
  }
  int64_t v_;
};

}  // namespace latentmoe::model
