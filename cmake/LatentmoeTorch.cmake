# Import libtorch from the PyPI torch wheel in the venv made by tools/setup.sh.
# LATENTMOE_PYTHON: that venv's python (the Makefile passes it; falls back to .venv-path).
if(NOT LATENTMOE_PYTHON)
  if(EXISTS "${CMAKE_SOURCE_DIR}/.venv-path")
    file(READ "${CMAKE_SOURCE_DIR}/.venv-path" _venv)
    string(STRIP "${_venv}" _venv)
    set(LATENTMOE_PYTHON "${_venv}/bin/python")
  else()
    message(FATAL_ERROR "LATENTMOE_PYTHON is not set and .venv-path is missing: run tools/setup.sh "
                        "(or `make setup`) first, or pass -DLATENTMOE_PYTHON=/path/to/venv/bin/python")
  endif()
endif()
set(LATENTMOE_PYTHON "${LATENTMOE_PYTHON}" CACHE FILEPATH "Python of the venv holding torch 2.11.0")

execute_process(
  COMMAND "${LATENTMOE_PYTHON}" -c "import torch, os; print(torch.utils.cmake_prefix_path); print(os.path.dirname(torch.__file__))"
  OUTPUT_VARIABLE _torch_out ERROR_VARIABLE _torch_err RESULT_VARIABLE _torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "cannot import torch with ${LATENTMOE_PYTHON}: ${_torch_err}\n"
                      "HINT: run tools/setup.sh to create the venv with torch==2.11.0")
endif()
string(REPLACE "\n" ";" _torch_out "${_torch_out}")
list(GET _torch_out 0 LATENTMOE_TORCH_PREFIX)
list(GET _torch_out 1 LATENTMOE_TORCH_DIR)
list(PREPEND CMAKE_PREFIX_PATH "${LATENTMOE_TORCH_PREFIX}")

find_package(Torch REQUIRED)
if(NOT Torch_VERSION VERSION_EQUAL 2.11.0)
  message(WARNING "latentmoe is pinned to torch 2.11.0, found ${Torch_VERSION}")
endif()

# torch's CMake flags (-D_GLIBCXX_USE_CXX11_ABI=1 etc.) come through the `torch` target; its
# CUDA flags rewrite is undone here so our own .cu files get plain, predictable flags.
set(LATENTMOE_TORCH_LIB_DIR "${LATENTMOE_TORCH_DIR}/lib")

# The wheel bundles fmt 12 headers in its include dir; Debian's spdlog is built against fmt 9.
# Use fmt header-only everywhere so each translation unit is self-consistent (fmt's inline
# version namespaces keep v9 and v12 apart), and keep spdlog behind src/util/log.cpp, which never
# sees torch's include dir.
add_library(latentmoe_torch INTERFACE)
target_link_libraries(latentmoe_torch INTERFACE torch)
target_compile_definitions(latentmoe_torch INTERFACE FMT_HEADER_ONLY=1)

# libtorch.so and libtorch_cpu.so export the std::filesystem functions of the GCC 13 libstdc++
# they were built with (statically linked). When libtorch precedes libstdc++.so.6 in an
# executable's DT_NEEDED list, the dynamic linker binds OUR std::filesystem calls to those copies,
# and some of them crash (remove_all jumps to address 0). Linking libstdc++ first puts the
# system's definitions first in the global lookup scope.
target_link_options(latentmoe_torch INTERFACE "LINKER:--no-as-needed" "-lstdc++")
