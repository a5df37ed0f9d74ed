// ProcessGroupNCCL (CUDA builds only; the NCCL headers and libtorch_cuda are needed to compile it).
#include "c10d_backends.h"

#include <fmt/format.h>

#include "latentmoe/util/error.h"

#ifdef LATENTMOE_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace latentmoe::parallel::detail {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    int device_index, std::chrono::milliseconds timeout) {
#ifdef LATENTMOE_WITH_CUDA
  const int devices = static_cast<int>(c10::cuda::device_count());
  if (device_index >= devices) {
    throw ConfigError(fmt::format("parallel.backend 'nccl': LOCAL_RANK={} needs GPU {} but this host has {} visible GPU(s); "
                                  "launch at most one rank per GPU or use parallel.backend 'gloo'",
                                  device_index, device_index, devices));
  }
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#else
  (void)store, (void)rank, (void)size, (void)device_index, (void)timeout;
  throw ConfigError("parallel.backend 'nccl': this build has no CUDA/NCCL (configure with nvcc available, "
                    "LATENTMOE_CUDA=ON); use parallel.backend 'gloo'");
#endif
}

}  // namespace latentmoe::parallel::detail
