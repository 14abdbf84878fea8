# FmCuda.cmake: decides whether the CUDA/cuDNN backend is built.
# AUTO builds it when nvcc and cuDNN are both found (a GPU is not needed to
# compile); otherwise the build is CPU-only and says so in one line.
set(FM_HAVE_CUDA OFF)
if(NOT FM_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  find_package(CUDAToolkit QUIET)
  find_path(FM_CUDNN_INCLUDE cudnn_backend.h
    HINTS ENV CUDNN_PATH ENV CUDNN_HOME ${CUDAToolkit_INCLUDE_DIRS}
    PATH_SUFFIXES include)
  find_library(FM_CUDNN_LIB cudnn
    HINTS ENV CUDNN_PATH ENV CUDNN_HOME ${CUDAToolkit_LIBRARY_DIR}
    PATH_SUFFIXES lib lib64)
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND FM_CUDNN_INCLUDE AND FM_CUDNN_LIB)
    enable_language(CUDA)
    set(FM_HAVE_CUDA ON)
    add_library(fm_cudnn INTERFACE)
    target_include_directories(fm_cudnn INTERFACE ${FM_CUDNN_INCLUDE})
    target_link_libraries(fm_cudnn INTERFACE ${FM_CUDNN_LIB})
    message(STATUS "fmserve: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, cuDNN ${FM_CUDNN_LIB}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  elseif(FM_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FM_CUDA=ON but nvcc, the CUDA toolkit or cuDNN was not found")
  endif()
endif()
if(NOT FM_HAVE_CUDA)
  message(STATUS "fmserve: CPU-only build (no nvcc/cuDNN found, or FM_CUDA=OFF)")
endif()
