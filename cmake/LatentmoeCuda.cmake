# Decide whether CUDA targets are built (LATENTMOE_WITH_CUDA) and prepare the toolkit so that
# torch's own cmake (which needs the toolkit because the PyPI wheel is a CUDA build) succeeds.
set(LATENTMOE_WITH_CUDA OFF)

# torch's cmake compares its CUDA version with the nvcc on PATH: prefer /usr/local/cuda's.
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()

if(NOT LATENTMOE_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Hopper is the target; nvcc 13 accepts compute_75..compute_121. Hopper-only kernels set
    # CUDA_ARCHITECTURES 90a on their own target.
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    set(LATENTMOE_WITH_CUDA ON)
  elseif(LATENTMOE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "LATENTMOE_CUDA=ON but no CUDA compiler was found: install the CUDA toolkit "
                        "(nvcc) or configure with -DLATENTMOE_CUDA=OFF")
  endif()
endif()

# Without a GPU, torch's arch autodetection falls back to a list nvcc 13 rejects and rewrites
# CMAKE_CUDA_FLAGS; pin it.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "8.0;9.0")
endif()

find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND AND NOT TARGET CUDA::nvToolsExt AND TARGET CUDA::nvtx3)
  # CUDA 13 ships only the header-only nvtx3; torch's cuda.cmake still asks for nvToolsExt.
  add_library(CUDA::nvToolsExt INTERFACE IMPORTED)
  target_link_libraries(CUDA::nvToolsExt INTERFACE CUDA::nvtx3)
  target_compile_definitions(CUDA::nvToolsExt INTERFACE TORCH_CUDA_USE_NVTX3)
endif()
