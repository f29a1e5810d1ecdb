# The media component's dependencies: FFmpeg (libavformat, libavcodec, libavutil, libswscale) and libsoxr through
# pkg-config, OpenCV's core/imgproc/objdetect through its CMake package or, where a distribution ships the
# libraries without OpenCVConfig.cmake (Debian's libopencv-*-dev without libopencv-dev), by their files.
#
#   cfnsr_find_media(<found-var> <missing-var>)   defines the interface target cfnsr_media_deps and CFNSR_HAAR_DIR
#
# Debian/Ubuntu: apt install pkg-config libavformat-dev libavcodec-dev libswscale-dev libsoxr-dev \
#                            libopencv-objdetect-dev libopencv-imgproc-dev opencv-data
function(cfnsr_find_media found_var missing_var)
  set(missing "")
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(CFNSR_FFMPEG QUIET IMPORTED_TARGET GLOBAL libavformat libavcodec libavutil libswscale)
    pkg_check_modules(CFNSR_SOXR QUIET IMPORTED_TARGET GLOBAL soxr)
    if(NOT CFNSR_FFMPEG_FOUND)
      list(APPEND missing "FFmpeg (libavformat-dev libavcodec-dev libswscale-dev)")
    endif()
    if(NOT CFNSR_SOXR_FOUND)
      list(APPEND missing "libsoxr (libsoxr-dev)")
    endif()
  else()
    list(APPEND missing "pkg-config (to find FFmpeg and libsoxr)")
  endif()

  set(opencv_target "")
  find_package(OpenCV QUIET COMPONENTS core imgproc objdetect)
  if(OpenCV_FOUND AND OpenCV_VERSION_MAJOR GREATER_EQUAL 5)
    list(APPEND missing "OpenCV 4.x (found ${OpenCV_VERSION}; OpenCV 5 removed the Haar CascadeClassifier that the "
                        "Python side uses too)")
  elseif(OpenCV_FOUND)
    set(opencv_target ${OpenCV_LIBS})
    set(opencv_include ${OpenCV_INCLUDE_DIRS})
    set(haar_hints "${OpenCV_INSTALL_PATH}/share/opencv4/haarcascades" "${OpenCV_INSTALL_PATH}/share/OpenCV/haarcascades")
  else()
    find_path(CFNSR_OPENCV_INCLUDE_DIR opencv2/objdetect.hpp PATH_SUFFIXES opencv4)
    foreach(module core imgproc objdetect)
      find_library(CFNSR_OPENCV_${module} opencv_${module})
      if(CFNSR_OPENCV_${module})
        list(APPEND opencv_target ${CFNSR_OPENCV_${module}})
      endif()
    endforeach()
    list(LENGTH opencv_target n)
    if(CFNSR_OPENCV_INCLUDE_DIR AND n EQUAL 3)
      set(opencv_include ${CFNSR_OPENCV_INCLUDE_DIR})
    else()
      set(opencv_target "")
    endif()
    set(haar_hints "")
  endif()
  if(NOT opencv_target AND NOT (OpenCV_FOUND AND OpenCV_VERSION_MAJOR GREATER_EQUAL 5))
    list(APPEND missing "OpenCV core/imgproc/objdetect (libopencv-objdetect-dev libopencv-imgproc-dev)")
  endif()

  find_path(CFNSR_HAAR_DIR haarcascade_frontalface_default.xml
            HINTS ${haar_hints} PATHS /usr/share/opencv4/haarcascades /usr/local/share/opencv4/haarcascades
            /usr/share/opencv/haarcascades NO_DEFAULT_PATH)
  if(NOT CFNSR_HAAR_DIR)
    message(STATUS "cfnsr_media: no haarcascade_frontalface_default.xml found (apt install opencv-data); the detector "
                   "then needs CFNSR_HAAR_CASCADE or an explicit cascade file")
    set(CFNSR_HAAR_DIR "" CACHE PATH "" FORCE)
  endif()

  if(missing)
    set(${found_var} FALSE PARENT_SCOPE)
    string(REPLACE ";" ", " missing "${missing}")
    set(${missing_var} "${missing}" PARENT_SCOPE)
    return()
  endif()
  if(NOT TARGET cfnsr_media_deps)
    add_library(cfnsr_media_deps INTERFACE)
    target_include_directories(cfnsr_media_deps SYSTEM INTERFACE ${opencv_include})
    target_link_libraries(cfnsr_media_deps INTERFACE PkgConfig::CFNSR_FFMPEG PkgConfig::CFNSR_SOXR ${opencv_target})
  endif()
  set(${found_var} TRUE PARENT_SCOPE)
  set(${missing_var} "" PARENT_SCOPE)
endfunction()
