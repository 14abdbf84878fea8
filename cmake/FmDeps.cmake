# FmDeps.cmake: finds the system libraries fmserve builds on. Every one is a
# Debian/Ubuntu -dev package installed by scripts/install-deps.sh; a missing
# one stops the configure step with the package to install.
find_package(Threads REQUIRED)
if(FM_ENGINE_ONLY)
  # Engines only (GPU machines without the server's libraries): see FmEngineOnly.cmake.
  include(FmEngineOnly)
  return()
endif()
find_package(PkgConfig REQUIRED)

macro(fm_require_pkg target module debpkg)
  pkg_check_modules(${target} IMPORTED_TARGET ${module})
  if(NOT ${target}_FOUND)
    message(FATAL_ERROR "fmserve needs ${module} (Debian/Ubuntu package ${debpkg}); run scripts/install-deps.sh")
  endif()
endmacro()

fm_require_pkg(FM_UV libuv libuv1-dev)
# msgpack-c's pkg-config name is "msgpack" up to 4.x and "msgpack-c" from 6.x.
pkg_check_modules(FM_MSGPACK IMPORTED_TARGET msgpack-c)
if(NOT FM_MSGPACK_FOUND)
  fm_require_pkg(FM_MSGPACK msgpack "libmsgpack-dev or libmsgpack-c-dev")
endif()
fm_require_pkg(FM_CJSON libcjson libcjson-dev)
fm_require_pkg(FM_ZLIB zlib zlib1g-dev)
fm_require_pkg(FM_CURL libcurl libcurl4-openssl-dev)
fm_require_pkg(FM_CRYPTO libcrypto libssl-dev)
fm_require_pkg(FM_PQ libpq libpq-dev)
fm_require_pkg(FM_PNG libpng libpng-dev)

# oneDNN: the CPU engine's and the trainer's compute library. Found as a plain
# library and header rather than through dnnl-config.cmake: Debian's package
# is built with the OpenCL GPU runtime, and its config file then demands the
# OpenCL development files, which fmserve never uses.
find_library(FM_DNNL_LIB dnnl)
find_path(FM_DNNL_INCLUDE oneapi/dnnl/dnnl.h)
if(NOT FM_DNNL_LIB OR NOT FM_DNNL_INCLUDE)
  message(FATAL_ERROR "fmserve needs oneDNN (Debian/Ubuntu package libdnnl-dev); run scripts/install-deps.sh")
endif()
add_library(fm_dnnl INTERFACE)
target_link_libraries(fm_dnnl INTERFACE ${FM_DNNL_LIB})
target_include_directories(fm_dnnl INTERFACE ${FM_DNNL_INCLUDE})
set(FM_DNNL_TARGET fm_dnnl)

# http_parser (nodejs/http-parser): parses requests on the health/metrics port.
find_path(FM_HTTP_PARSER_INCLUDE http_parser.h)
find_library(FM_HTTP_PARSER_LIB http_parser)
if(NOT FM_HTTP_PARSER_INCLUDE OR NOT FM_HTTP_PARSER_LIB)
  message(FATAL_ERROR "fmserve needs http_parser (Debian/Ubuntu package libhttp-parser-dev); run scripts/install-deps.sh")
endif()
add_library(fm_http_parser INTERFACE)
target_link_libraries(fm_http_parser INTERFACE ${FM_HTTP_PARSER_LIB})
target_include_directories(fm_http_parser INTERFACE ${FM_HTTP_PARSER_INCLUDE})

find_library(FM_MATH_LIB m)
