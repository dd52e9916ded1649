// Internal error type. Engine code throws mcpm::Error; the C API layer (api/c_api.cpp) catches it,
// turning it into a status code plus the thread-local last-error message (and the batch runner, per
// session of a step, into that item's status and message), both through current_exception_status().
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "minicpm4.h"

namespace mcpm {

class Error : public std::runtime_error {
 public:
  Error(mcpm_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  mcpm_status status() const { return status_; }

 private:
  mcpm_status status_;
};

[[noreturn]] void throw_error(mcpm_status status, const std::string& message);
[[noreturn]] inline void invalid_argument(const std::string& message) {
  throw_error(MCPM_ERR_INVALID_ARGUMENT, message);
}

// Checks an internal invariant; a failure is an engine bug reported as MCPM_ERR_INTERNAL.
#define MCPM_CHECK(cond)                                                                              \
  do {                                                                                                \
    if (!(cond)) ::mcpm::throw_error(MCPM_ERR_INTERNAL, std::string("internal check failed: " #cond  \
                                                                    " at ") + __FILE__ + ":" +        \
                                                            std::to_string(__LINE__));                \
  } while (0)

// Inside a catch block: the status and message of the exception being handled (mcpm::Error's own,
// OUT_OF_MEMORY for std::bad_alloc, INTERNAL for anything else). Never throws.
mcpm_status current_exception_status(std::string& message) noexcept;

// Thread-local last-error message used by mcpm_last_error().
void set_last_error(const std::string& message);
const char* last_error();

// Throws INVALID_ARGUMENT "invalid <what>: <field> <why>" unless ok (config validation).
inline void require_field(bool ok, const char* what, const char* field, const std::string& why) {
  if (!ok) invalid_argument(std::string("invalid ") + what + ": " + field + " " + why);
}

}  // namespace mcpm
