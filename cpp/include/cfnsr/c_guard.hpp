// For components that extend the C interface on top of the runtime (as cfnsr::media does): the runtime's public
// record of the calling thread's cfnsr_last_error(), and guarded(), which turns every exception into a cfnsr_status
// and that message, so that no exception crosses into C.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "cfnsr/cfnsr.h"
#include "cfnsr/runtime.hpp"

namespace cfnsr {

// Set this thread's cfnsr_last_error().
CFNSR_API void set_last_error(const std::string& message);

inline cfnsr_status fail(cfnsr_status status, const std::string& message) {
  set_last_error(message);
  return status;
}

// Run f, turning every exception into a status and a message.
template <typename F>
cfnsr_status guarded(F&& f) {
  try {
    f();
    return CFNSR_OK;
  } catch (const Error& e) {
    return fail(static_cast<cfnsr_status>(e.status()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(CFNSR_ERROR_RUNTIME, "out of memory");
  } catch (const std::exception& e) {
    return fail(CFNSR_ERROR_INTERNAL, std::string("unexpected error: ") + e.what());
  } catch (...) {
    return fail(CFNSR_ERROR_INTERNAL, "unexpected error of unknown type");
  }
}

// The model behind a handle from cfnsr_open (non-null), for entry points that take one.
CFNSR_API const Model& model_of(const cfnsr_model* handle);

}  // namespace cfnsr
