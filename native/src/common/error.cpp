#include "common/error.h"

#include <new>

namespace mcpm {

namespace {
thread_local std::string t_last_error;
}

void throw_error(mcpm_status status, const std::string& message) { throw Error(status, message); }

mcpm_status current_exception_status(std::string& message) noexcept {
  try {
    try {
      throw;
    } catch (const Error& e) {
      message = e.what();
      return e.status();
    } catch (const std::bad_alloc&) {
      message = "out of memory";
      return MCPM_ERR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
      message = std::string("internal error: ") + e.what();
      return MCPM_ERR_INTERNAL;
    } catch (...) {
      message = "internal error: unknown exception";
      return MCPM_ERR_INTERNAL;
    }
  } catch (...) {
    return MCPM_ERR_OUT_OF_MEMORY;  // building the message failed
  }
}

void set_last_error(const std::string& message) {
  try {
    t_last_error = message;
  } catch (...) {
    // Out of memory while storing the message: keep the previous one rather than fail.
  }
}

const char* last_error() { return t_last_error.c_str(); }

}  // namespace mcpm
