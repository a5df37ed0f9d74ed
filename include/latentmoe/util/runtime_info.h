// What the runtime offers: torch version, CUDA availability (or why not), threads, BLAS/oneDNN.
#pragma once

#include <string>

namespace latentmoe {

struct CudaStatus {
  bool available = false;
  int device_count = 0;
  std::string reason;  // why CUDA is not usable, when it is not
};

CudaStatus cuda_status();
// Multi-line report for `latentmoe version`.
std::string runtime_report();

}  // namespace latentmoe
