// Internal: the C handle of a model and the error recording of the C interfaces (the runtime's cfnsr.h and the
// media component's media.h share one cfnsr_last_error()).
#pragma once

#include <exception>
#include <memory>
#include <new>
#include <string>

#include "cfnsr/cfnsr.h"
#include "cfnsr/runtime.hpp"

struct cfnsr_model {
  std::unique_ptr<cfnsr::Model> model;
};

namespace cfnsr::detail {

// Set this thread's cfnsr_last_error() (exported by cfnsr_runtime for the media component; not public API).
CFNSR_API void set_last_error(const std::string& message);

inline cfnsr_status fail(cfnsr_status status, const std::string& message) {
  set_last_error(message);
  return status;
}

// Run f, turning every exception into a status and a message: no exception crosses into C.
template <typename F>
cfnsr_status guarded(F&& f) {
  try {
    f();
    return CFNSR_OK;
  } catch (const cfnsr::Error& e) {
    return fail(static_cast<cfnsr_status>(e.status()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(CFNSR_ERROR_RUNTIME, "out of memory");
  } catch (const std::exception& e) {
    return fail(CFNSR_ERROR_INTERNAL, std::string("unexpected error: ") + e.what());
  } catch (...) {
    return fail(CFNSR_ERROR_INTERNAL, "unexpected error of unknown type");
  }
}

}  // namespace cfnsr::detail
