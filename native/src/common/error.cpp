#include "common/error.h"

namespace mcpm {

namespace {
thread_local std::string t_last_error;
}

void throw_error(mcpm_status status, const std::string& message) { throw Error(status, message); }

void set_last_error(const std::string& message) {
  try {
    t_last_error = message;
  } catch (...) {
    // Out of memory while storing the message: keep the previous one rather than fail.
  }
}

const char* last_error() { return t_last_error.c_str(); }

}  // namespace mcpm
