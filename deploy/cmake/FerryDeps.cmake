# Finds ferry's dependencies. Each missing one stops configure with the Debian
# package that provides it, so a newcomer knows exactly what to install
# (deploy/install-deps.sh installs them all).
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install the Debian package 'pkg-config' (or run deploy/install-deps.sh)")
endif()
find_package(Threads REQUIRED)

function(ferry_pkg target pcname debpkg)
  pkg_check_modules(${target} QUIET IMPORTED_TARGET ${pcname})
  if(NOT ${target}_FOUND)
    message(FATAL_ERROR "${pcname} not found: install the Debian package '${debpkg}' (or run deploy/install-deps.sh)")
  endif()
endfunction()

ferry_pkg(UV libuv libuv1-dev)
ferry_pkg(JANSSON jansson libjansson-dev)
ferry_pkg(SQLITE sqlite3 libsqlite3-dev)
ferry_pkg(PCRE2 libpcre2-8 libpcre2-dev)
ferry_pkg(UTF8PROC libutf8proc libutf8proc-dev)
ferry_pkg(HIREDIS hiredis libhiredis-dev)

# mbedTLS 2.28 ships no pkg-config file on Debian 12.
find_path(MBEDTLS_INCLUDE_DIR mbedtls/ssl.h)
find_library(MBEDTLS_LIB mbedtls)
find_library(MBEDX509_LIB mbedx509)
find_library(MBEDCRYPTO_LIB mbedcrypto)
if(NOT MBEDTLS_INCLUDE_DIR OR NOT MBEDTLS_LIB OR NOT MBEDX509_LIB OR NOT MBEDCRYPTO_LIB)
  message(FATAL_ERROR "mbedTLS not found: install the Debian package 'libmbedtls-dev' (or run deploy/install-deps.sh)")
endif()
file(STRINGS ${MBEDTLS_INCLUDE_DIR}/mbedtls/version.h _mbed_ver REGEX "#define MBEDTLS_VERSION_STRING ")
if(NOT _mbed_ver MATCHES "\"2\\.28\\.")
  message(FATAL_ERROR "mbedTLS 2.28 is required (found: ${_mbed_ver}); install Debian 12's 'libmbedtls-dev'")
endif()
add_library(ferry_mbedtls INTERFACE)
target_include_directories(ferry_mbedtls INTERFACE ${MBEDTLS_INCLUDE_DIR})
target_link_libraries(ferry_mbedtls INTERFACE ${MBEDTLS_LIB} ${MBEDX509_LIB} ${MBEDCRYPTO_LIB})

# llhttp: Debian's node-llhttp ships the generated C sources; compile them here.
set(LLHTTP_SRC_DIR /usr/share/llhttp CACHE PATH "Directory with llhttp's api.c, http.c, llhttp.c")
set(LLHTTP_INCLUDE_DIR /usr/share/include/llhttp CACHE PATH "Directory with llhttp.h")
if(NOT EXISTS ${LLHTTP_SRC_DIR}/llhttp.c OR NOT EXISTS ${LLHTTP_INCLUDE_DIR}/llhttp.h)
  message(FATAL_ERROR "llhttp sources not found in ${LLHTTP_SRC_DIR}: install the Debian package 'node-llhttp' (or run deploy/install-deps.sh)")
endif()
add_library(llhttp STATIC ${LLHTTP_SRC_DIR}/api.c ${LLHTTP_SRC_DIR}/http.c ${LLHTTP_SRC_DIR}/llhttp.c)
target_include_directories(llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
# Generated third-party code: keep our warning flags off it.
target_compile_options(llhttp PRIVATE -w)
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)

# CUDA: optional, found through nvcc.
set(FERRY_HAVE_CUDA OFF)
if(NOT FERRY_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER)
    find_program(_nvcc nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
    if(_nvcc)
      set(CMAKE_CUDA_COMPILER ${_nvcc})
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(CUDAToolkit_FOUND)
      set(FERRY_HAVE_CUDA ON)
    endif()
  endif()
  if(FERRY_CUDA STREQUAL "ON" AND NOT FERRY_HAVE_CUDA)
    message(FATAL_ERROR "FERRY_CUDA=ON but nvcc/CUDA Toolkit not found: install the CUDA Toolkit at /usr/local/cuda or use -DFERRY_CUDA=OFF")
  endif()
endif()

# Test-only dependencies.
pkg_check_modules(CMOCKA QUIET IMPORTED_TARGET cmocka)
