# FmEngineOnly.cmake: the dependencies of an engine-only build
# (-DFM_ENGINE_ONLY=ON): the compute engines (CPU and CUDA), their tests and
# benchmarks, and nothing of the server, trainer or CLI. It is meant for GPU
# machines that have the CUDA toolkit but not the server's libraries (libuv,
# msgpack, libpq, curl) and possibly no pkg-config: each library is found by
# header and file name (a versioned soname is enough), searched first under
# CMAKE_PREFIX_PATH, where benchmarks/gpu/run-on-gpu.sh puts .deb packages it
# unpacked. The targets keep the names FmDeps.cmake gives them
# (PkgConfig::FM_*), so host/*/CMakeLists.txt work unchanged.

# fm_engine_only_lib(<target> <header> <debpkg> NAMES <lib names...> [SUBDIRS <include subdirs...>])
# SUBDIRS adds include directories below the found one, as the package's
# pkg-config file does (cJSON is included both as <cJSON.h> and <cjson/cJSON.h>).
function(fm_engine_only_lib target header debpkg)
  cmake_parse_arguments(L "" "" "NAMES;SUFFIXES;SUBDIRS" ${ARGN})
  find_path(${target}_INCLUDE_DIR ${header} PATH_SUFFIXES ${L_SUFFIXES})
  find_library(${target}_LIBRARY NAMES ${L_NAMES})
  if(NOT ${target}_INCLUDE_DIR OR NOT ${target}_LIBRARY)
    message(FATAL_ERROR "fmserve (engine-only) needs ${header} and one of ${L_NAMES} "
                        "(Debian/Ubuntu package ${debpkg}); put the unpacked .deb under CMAKE_PREFIX_PATH")
  endif()
  set(dirs ${${target}_INCLUDE_DIR})
  # Multiarch headers (OpenSSL's configuration.h) live in include/<arch>.
  if(CMAKE_LIBRARY_ARCHITECTURE AND EXISTS "${${target}_INCLUDE_DIR}/${CMAKE_LIBRARY_ARCHITECTURE}")
    list(APPEND dirs "${${target}_INCLUDE_DIR}/${CMAKE_LIBRARY_ARCHITECTURE}")
  endif()
  foreach(sub IN LISTS L_SUBDIRS)
    list(APPEND dirs ${${target}_INCLUDE_DIR}/${sub})
  endforeach()
  add_library(PkgConfig::${target} INTERFACE IMPORTED GLOBAL)
  set_target_properties(PkgConfig::${target} PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${dirs}"
    INTERFACE_LINK_LIBRARIES "${${target}_LIBRARY}")
  message(STATUS "fmserve (engine-only): ${target} ${${target}_LIBRARY}")
endfunction()

# The model format's JSON sidecar (cJSON is included as <cjson/cJSON.h>).
fm_engine_only_lib(FM_CJSON cjson/cJSON.h libcjson-dev NAMES cjson libcjson.so.1 SUBDIRS cjson)
# IDX files are gzipped.
fm_engine_only_lib(FM_ZLIB zlib.h zlib1g-dev NAMES z libz.so.1)
# SHA-256 of model and data files.
fm_engine_only_lib(FM_CRYPTO openssl/evp.h libssl-dev NAMES crypto libcrypto.so.3)

# oneDNN: the CPU engine. By library and header, not dnnl-config.cmake (which
# demands OpenCL development files when the package was built with them).
find_library(FM_DNNL_LIB NAMES dnnl libdnnl.so.3 libdnnl.so.2)
find_path(FM_DNNL_INCLUDE oneapi/dnnl/dnnl.h)
if(NOT FM_DNNL_LIB OR NOT FM_DNNL_INCLUDE)
  message(FATAL_ERROR "fmserve (engine-only) needs oneDNN (Debian/Ubuntu package libdnnl-dev)")
endif()
add_library(fm_dnnl INTERFACE)
target_link_libraries(fm_dnnl INTERFACE ${FM_DNNL_LIB})
target_include_directories(fm_dnnl INTERFACE ${FM_DNNL_INCLUDE})
set(FM_DNNL_TARGET fm_dnnl)

find_library(FM_MATH_LIB m)

# fm_data for an engine-only build: the IDX loader alone (the download in
# fm_fetch.c needs curl and is not part of an engine).
function(fm_engine_only_data)
  add_library(fm_data STATIC ${PROJECT_SOURCE_DIR}/host/data/fm_idx.c)
  target_include_directories(fm_data PUBLIC ${PROJECT_SOURCE_DIR}/host/data)
  target_link_libraries(fm_data PUBLIC fm_common PRIVATE PkgConfig::FM_ZLIB)
  fm_target_warnings(fm_data)
endfunction()
