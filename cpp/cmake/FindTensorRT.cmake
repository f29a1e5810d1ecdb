# FindTensorRT: NvInfer.h and libnvinfer, as the imported target TensorRT::nvinfer.
#
# Looks in TensorRT_ROOT (CMake or environment variable: an unpacked TensorRT tar), then the system folders where
# the Debian packages and JetPack put it (/usr/include/<arch>-linux-gnu, /usr/lib/<arch>-linux-gnu).
# Sets TensorRT_FOUND, TensorRT_VERSION, TensorRT_INCLUDE_DIR, TensorRT_LIBRARY.
find_path(TensorRT_INCLUDE_DIR NvInfer.h
          HINTS ${TensorRT_ROOT} ENV TensorRT_ROOT PATH_SUFFIXES include include/${CMAKE_LIBRARY_ARCHITECTURE})
find_library(TensorRT_LIBRARY nvinfer
             HINTS ${TensorRT_ROOT} ENV TensorRT_ROOT PATH_SUFFIXES lib lib64 lib/${CMAKE_LIBRARY_ARCHITECTURE})
if(TensorRT_INCLUDE_DIR)
  foreach(header NvInferVersion.h NvInfer.h)
    if(EXISTS "${TensorRT_INCLUDE_DIR}/${header}")
      file(STRINGS "${TensorRT_INCLUDE_DIR}/${header}" lines REGEX "#define (NV_)?TRT_(MAJOR|MINOR|PATCH)_[A-Z]* |#define NV_TENSORRT_(MAJOR|MINOR|PATCH) ")
      foreach(part MAJOR MINOR PATCH)
        string(REGEX MATCH "NV_TENSORRT_${part} [0-9]+|TRT_${part}_[A-Z]+ [0-9]+" hit "${lines}")
        string(REGEX MATCH "[0-9]+$" TensorRT_VERSION_${part} "${hit}")
      endforeach()
      if(TensorRT_VERSION_MAJOR)
        set(TensorRT_VERSION "${TensorRT_VERSION_MAJOR}.${TensorRT_VERSION_MINOR}.${TensorRT_VERSION_PATCH}")
        break()
      endif()
    endif()
  endforeach()
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT REQUIRED_VARS TensorRT_LIBRARY TensorRT_INCLUDE_DIR
                                  VERSION_VAR TensorRT_VERSION)
if(TensorRT_FOUND AND NOT TARGET TensorRT::nvinfer)
  add_library(TensorRT::nvinfer UNKNOWN IMPORTED)
  set_target_properties(TensorRT::nvinfer PROPERTIES IMPORTED_LOCATION "${TensorRT_LIBRARY}"
                                                     INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIR}")
endif()
mark_as_advanced(TensorRT_INCLUDE_DIR TensorRT_LIBRARY)
