# ccache for C++ and CUDA. Precompiled headers need the pch_defines/time_macros sloppiness,
# otherwise every TU that uses the torch PCH is a cache miss.
find_program(LATENTMOE_CCACHE ccache)
if(LATENTMOE_CCACHE)
  set(_launcher ${CMAKE_COMMAND} -E env
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      "CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}" ${LATENTMOE_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_launcher})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_launcher})
  message(STATUS "latentmoe: using ccache ${LATENTMOE_CCACHE}")
else()
  message(STATUS "latentmoe: ccache not found, rebuilds will be slow (apt-get install ccache)")
endif()
