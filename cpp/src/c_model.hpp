// Internal: the C handle of a model. The error recording and guarded() of the C interfaces are public
// (cfnsr/c_guard.hpp), so that the media component's media.h shares one cfnsr_last_error() through the public API.
#pragma once

#include <memory>

#include "cfnsr/c_guard.hpp"

struct cfnsr_model {
  std::unique_ptr<cfnsr::Model> model;
};
