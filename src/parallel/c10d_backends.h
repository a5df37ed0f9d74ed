// Private to src/parallel: creating torch's c10d backends. Gloo comes with every libtorch;
// NCCL is compiled only in CUDA builds (nccl_backend.cpp) and otherwise refused with a clear error.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace latentmoe::parallel::detail {

// Where a rank's gloo pairs listen: the interfaces (GLOO_SOCKET_IFNAME, or the one the route
// toward MASTER_ADDR leaves by) and the address.
struct GlooBinding {
  std::vector<std::string> interfaces;
  std::string address;
  std::string why;  // "GLOO_SOCKET_IFNAME=eth0", "the route toward MASTER_ADDR=10.0.0.1 (10.0.0.1)", ...
};

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    const GlooBinding& binding, std::chrono::milliseconds timeout);
// device_index: the GPU of this rank (LOCAL_RANK). Throws ConfigError without a CUDA build or GPU.
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    int device_index, std::chrono::milliseconds timeout);

}  // namespace latentmoe::parallel::detail
