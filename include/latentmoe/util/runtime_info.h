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
// What decides bit-identical results on a CPU (golden runs): the CPU model (/proc/cpuinfo), the
// vector ISA torch dispatches to ("AVX512", "AVX2", ...), the compiler that built latentmoe.
std::string cpu_model_name();
std::string cpu_capability();
std::string compiler_id();
std::string torch_version();
// The malloc in use: "gperftools 2.10" (tcmalloc, what latentmoe links), "jemalloc 5.3.0-..." when
// preloaded, else "glibc malloc".
std::string allocator_name();
// Intra-op threads and the OpenMP variables that change how they wait and where they run
// ("2 threads, OMP_WAIT_POLICY=default, OMP_PROC_BIND=default, ...").
std::string openmp_settings();
// Multi-line report for `latentmoe version`.
std::string runtime_report();

}  // namespace latentmoe
