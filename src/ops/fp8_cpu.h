// The CPU inner loops of FP8 quantization: a tile's amax, e4m3 encoding of a span sharing one
// scale, and decoding. AVX-512 bodies where the CPU has it (GCC does not vectorize the portable
// loops: byte stores and bit selects), the portable loops elsewhere; both give the same bits.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace latentmoe::ops::fp8::cpu {

// max(*amax, max |src[0, n)|); false if a value is NaN or infinite.
bool tile_amax(const float* src, int64_t n, float* amax);
bool tile_amax(const c10::BFloat16* src, int64_t n, float* amax);
bool tile_amax(const c10::Half* src, int64_t n, float* amax);

// dst[i] = e4m3 code of clamp(src[i] / scale, -448, 448), round to nearest even; NaN stays NaN.
void encode(const float* src, int64_t n, float scale, uint8_t* dst);
void encode(const c10::BFloat16* src, int64_t n, float scale, uint8_t* dst);
void encode(const c10::Half* src, int64_t n, float scale, uint8_t* dst);

// out[i] = value of code data[i] x scale.
void decode(const uint8_t* data, int64_t n, float scale, float* out);

}  // namespace latentmoe::ops::fp8::cpu
