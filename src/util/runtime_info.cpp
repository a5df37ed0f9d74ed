// Runtime capability report. A CUDA binary on a machine without a GPU gets "driver version
// insufficient" or "no CUDA GPUs": that is reported as "not available", not as an error.
#include "latentmoe/util/runtime_info.h"

#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "latentmoe/version.h"

namespace latentmoe {

CudaStatus cuda_status() {
  CudaStatus status;
  try {
    status.device_count = static_cast<int>(c10::cuda::device_count_ensure_non_zero());
    status.available = status.device_count > 0;
  } catch (const c10::Error& e) {
    status.reason = e.what_without_backtrace();
  }
  if (!status.available && status.reason.empty()) status.reason = "no CUDA devices found";
  return status;
}

namespace {
// The "MKL-DNN v3.x" / "CPU capability" lines of torch's build description.
std::string config_lines_with(const std::string& config, const std::vector<std::string>& needles) {
  std::istringstream in(config);
  std::string line, out;
  while (std::getline(in, line)) {
    for (const auto& n : needles) {
      if (line.find(n) != std::string::npos) {
        const size_t start = line.find_first_not_of(" -");
        out += "    " + line.substr(start == std::string::npos ? 0 : start) + "\n";
        break;
      }
    }
  }
  return out;
}
}  // namespace

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      const size_t start = line.find_first_not_of(" \t", line.find(':') + 1);
      return start == std::string::npos ? "unknown" : line.substr(start);
    }
  }
  return "unknown";
}

std::string cpu_capability() { return at::get_cpu_capability(); }

std::string compiler_id() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::string torch_version() { return TORCH_VERSION; }

std::string allocator_name() {
  // tcmalloc exports tc_version, jemalloc mallctl; looked up at run time so a preloaded one is
  // reported too.
  using TcVersion = const char* (*)(int*, int*, const char**);
  if (const auto tc_version = reinterpret_cast<TcVersion>(dlsym(RTLD_DEFAULT, "tc_version"))) {
    const char* version = tc_version(nullptr, nullptr, nullptr);
    return version != nullptr ? std::string(version) : "tcmalloc";
  }
  using Mallctl = int (*)(const char*, void*, size_t*, void*, size_t);
  const auto mallctl = reinterpret_cast<Mallctl>(dlsym(RTLD_DEFAULT, "mallctl"));
  if (mallctl == nullptr) return "glibc malloc";
  const char* version = nullptr;
  size_t size = sizeof(version);
  if (mallctl("version", &version, &size, nullptr, 0) != 0 || version == nullptr) return "jemalloc";
  return std::string("jemalloc ") + version;
}

std::string openmp_settings() {
  std::string out = std::to_string(at::get_num_threads()) + " threads";
  for (const char* name : {"OMP_WAIT_POLICY", "OMP_PROC_BIND", "OMP_PLACES", "GOMP_SPINCOUNT"}) {
    const char* value = std::getenv(name);
    out += std::string(", ") + name + "=" + (value != nullptr && *value != '\0' ? value : "default");
  }
  return out;
}

std::string runtime_report() {
  std::ostringstream out;
  out << "latentmoe " << kVersion << "\n";
  out << "torch      " << TORCH_VERSION << "\n";
  out << "cpu        " << cpu_model_name() << " (torch kernels: " << cpu_capability() << ")\n";
  const CudaStatus cuda = cuda_status();
  out << "cuda       ";
  if (cuda.available) {
    out << "available, " << cuda.device_count << " device(s)\n";
  } else {
    out << "not available: " << cuda.reason << "\n";
  }
  out << "kernels    latentmoe CUDA kernels " << (kBuiltWithCuda ? "compiled in" : "not compiled (LATENTMOE_CUDA=OFF or no nvcc)")
      << "\n";
  out << "threads    intra-op " << at::get_num_threads() << ", inter-op " << at::get_num_interop_threads()
      << " (set OMP_NUM_THREADS to change)\n";
  out << "openmp     " << openmp_settings() << "\n";
  out << "malloc     " << allocator_name() << "\n";
  out << "blas       MKL " << (at::hasMKL() ? "yes" : "no") << ", oneDNN " << (at::hasMKLDNN() ? "yes" : "no")
      << ", OpenMP " << (at::hasOpenMP() ? "yes" : "no") << "\n";
  out << config_lines_with(at::show_config(), {"Math Kernel Library", "MKL-DNN", "CPU capability"});
  return out.str();
}

}  // namespace latentmoe
