// Named weight slots filled tensor by tensor from the host: shape and dtype validation, upload into
// backend memory, and the completeness check. Shared by the model and the EAGLE draft.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "minicpm4.h"

namespace mcpm {

class WeightStore {
 public:
  // `what` names the owner in messages ("this MiniCPM4 config", "this EAGLE draft").
  WeightStore(Backend& backend, std::string what) : backend_(backend), what_(std::move(what)) {}

  // Declares a tensor: its checkpoint name, shape (1-D or 2-D) and where its view goes.
  void add(std::string name, std::vector<int64_t> shape, Tensor* target, bool optional = false);
  bool knows(const std::string& name) const { return index_.count(name) != 0; }

  // Validates dtype, shape and byte size against the declaration and uploads a copy. Throws
  // INVALID_ARGUMENT naming the tensor (unknown name, wrong shape, dtype or size).
  void set(const std::string& name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim, const void* data,
           size_t data_size);

  // Throws INVALID_ARGUMENT naming the first missing required tensor and how many more are missing.
  void check_complete() const;
  bool is_set(const std::string& name) const;
  uint64_t bytes() const;

 private:
  struct Slot {
    std::string name;
    std::vector<int64_t> shape;
    Tensor* target = nullptr;
    bool optional = false;
    std::unique_ptr<Buffer> storage;
  };
  Backend& backend_;
  std::string what_;
  std::vector<Slot> slots_;
  std::unordered_map<std::string, size_t> index_;
};

std::string shape_string(const int64_t* shape, size_t ndim);

}  // namespace mcpm
