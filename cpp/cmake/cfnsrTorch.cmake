# cfnsr_find_torch(<found-var>): the imported target cfnsr_torch, built from libtorch's folder layout.
#
# Why not find_package(Torch): the CUDA builds of the torch wheel ship a TorchConfig.cmake that stops with a fatal
# error when the CUDA toolkit is not installed, which is the case on CPU build machines and in CI. The backend
# needs only libtorch's headers and shared libraries, which the wheel and the libtorch zip lay out the same way:
# include/, include/torch/csrc/api/include/, lib/libtorch.so, lib/libtorch_cpu.so, lib/libc10.so (and, in CUDA
# builds, lib/libtorch_cuda.so, loaded so that CUDA packages run).
#
# Sets CFNSR_TORCH_LIBRARY_DIR and CFNSR_TORCH_CXX_STANDARD (20 for libtorch >= 2.10, else 17).
function(cfnsr_find_torch found_var)
  set(root "${CFNSR_TORCH_ROOT}")
  if(NOT root)
    find_package(Python3 COMPONENTS Interpreter QUIET)
    if(Python3_Interpreter_FOUND)
      execute_process(COMMAND "${Python3_EXECUTABLE}" -c "import os, torch; print(os.path.dirname(torch.__file__))"
                      OUTPUT_VARIABLE root OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
      if(NOT rc EQUAL 0)
        set(root "")
      endif()
    endif()
  endif()
  if(NOT root OR NOT EXISTS "${root}/include/torch/csrc/inductor/aoti_package/model_package_loader.h")
    message(STATUS "cfnsr_runtime: libtorch with AOTInductor headers not found (CFNSR_TORCH_ROOT='${root}')")
    set(${found_var} FALSE PARENT_SCOPE)
    return()
  endif()
  set(libs "")
  foreach(name torch torch_cpu c10 torch_cuda c10_cuda)
    find_library(CFNSR_TORCH_LIB_${name} ${name} PATHS "${root}/lib" NO_DEFAULT_PATH)
    if(CFNSR_TORCH_LIB_${name})
      list(APPEND libs "${CFNSR_TORCH_LIB_${name}}")
    elseif(name MATCHES "^(torch|torch_cpu|c10)$")
      message(STATUS "cfnsr_runtime: ${root}/lib has no lib${name}")
      set(${found_var} FALSE PARENT_SCOPE)
      return()
    endif()
  endforeach()
  # The torch version decides the C++ standard its headers need.
  # (torch/headeronly/version.h since 2.9, torch/csrc/api/include/torch/version.h before.)
  set(major "")
  set(minor "")
  foreach(header "${root}/include/torch/headeronly/version.h" "${root}/include/torch/csrc/api/include/torch/version.h")
    if(NOT major AND EXISTS "${header}")
      file(STRINGS "${header}" ver REGEX "#define TORCH_VERSION_(MAJOR|MINOR) ")
      string(REGEX REPLACE ".*TORCH_VERSION_MAJOR ([0-9]+).*" "\\1" major "${ver}")
      string(REGEX REPLACE ".*TORCH_VERSION_MINOR ([0-9]+).*" "\\1" minor "${ver}")
    endif()
  endforeach()
  if(NOT major OR major GREATER 2 OR (major EQUAL 2 AND minor GREATER_EQUAL 10))
    set(std 20)
  else()
    set(std 17)
  endif()
  # Wheels since torch 2.7 use the C++11 ABI; older pre-cxx11 libtorch builds need CFNSR_TORCH_CXX11_ABI=0.
  if(NOT DEFINED CFNSR_TORCH_CXX11_ABI)
    set(CFNSR_TORCH_CXX11_ABI 1)
  endif()
  add_library(cfnsr_torch INTERFACE IMPORTED GLOBAL)
  target_include_directories(cfnsr_torch SYSTEM INTERFACE "${root}/include" "${root}/include/torch/csrc/api/include")
  target_compile_definitions(cfnsr_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${CFNSR_TORCH_CXX11_ABI})
  # --no-as-needed keeps libtorch_cuda loaded (it registers the CUDA device) though nothing calls it by name.
  target_link_libraries(cfnsr_torch INTERFACE "-Wl,--no-as-needed" ${libs} "-Wl,--as-needed")
  set(CFNSR_TORCH_LIBRARY_DIR "${root}/lib" PARENT_SCOPE)
  set(CFNSR_TORCH_CXX_STANDARD ${std} PARENT_SCOPE)
  message(STATUS "cfnsr_runtime: libtorch ${major}.${minor} at ${root} (C++${std})")
  set(${found_var} TRUE PARENT_SCOPE)
endfunction()
