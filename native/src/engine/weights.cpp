#include "engine/weights.h"

#include <algorithm>
#include <sstream>

#include "common/error.h"

namespace mcpm {

std::string shape_string(const int64_t* shape, size_t ndim) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < ndim; ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

void WeightStore::add(std::string name, std::vector<int64_t> shape, Tensor* target, bool optional) {
  index_.emplace(name, slots_.size());
  slots_.push_back(Slot{std::move(name), std::move(shape), target, optional, nullptr});
}

void WeightStore::set(const std::string& name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim,
                      const void* data, size_t data_size) {
  auto it = index_.find(name);
  if (it == index_.end()) invalid_argument("unknown tensor '" + name + "' for " + what_);
  Slot& slot = slots_[it->second];
  if (dtype != MCPM_DTYPE_F32 && dtype != MCPM_DTYPE_F16 && dtype != MCPM_DTYPE_BF16)
    invalid_argument("tensor '" + slot.name + "': unknown dtype " + std::to_string(dtype) +
                     " (expected MCPM_DTYPE_F32, _F16 or _BF16)");
  const bool same_shape = ndim >= 0 && static_cast<size_t>(ndim) == slot.shape.size() &&
                          std::equal(slot.shape.begin(), slot.shape.end(), shape);
  if (!same_shape)
    invalid_argument("tensor '" + slot.name + "' has shape " + shape_string(shape, static_cast<size_t>(std::max(ndim, 0))) +
                     " but the config requires " + shape_string(slot.shape.data(), slot.shape.size()));
  const DType dt = static_cast<DType>(dtype);
  const int64_t cols = slot.shape.back();
  const int64_t rows = slot.shape.size() == 2 ? slot.shape[0] : 1;
  const size_t bytes = static_cast<size_t>(rows) * static_cast<size_t>(cols) * dtype_size(dt);
  if (data_size != bytes)
    invalid_argument("tensor '" + slot.name + "': data_size is " + std::to_string(data_size) + " bytes but " +
                     shape_string(slot.shape.data(), slot.shape.size()) + " " + dtype_name(dt) + " needs " +
                     std::to_string(bytes));
  std::unique_ptr<Buffer> storage = backend_.alloc(bytes);
  backend_.upload(storage->data(), data, bytes);
  slot.storage = std::move(storage);
  *slot.target = Tensor{slot.storage->data(), dt, rows, cols};
}

void WeightStore::check_complete() const {
  size_t missing = 0;
  const Slot* first = nullptr;
  for (const Slot& s : slots_) {
    if (s.storage || s.optional) continue;
    if (!first) first = &s;
    ++missing;
  }
  if (first)
    invalid_argument("missing tensor '" + first->name + "'" +
                     (missing > 1 ? " (and " + std::to_string(missing - 1) + " more)" : std::string()));
}

bool WeightStore::is_set(const std::string& name) const {
  auto it = index_.find(name);
  return it != index_.end() && slots_[it->second].storage != nullptr;
}

uint64_t WeightStore::bytes() const {
  uint64_t total = 0;
  for (const Slot& s : slots_)
    if (s.storage) total += s.storage->size();
  return total;
}

}  // namespace mcpm
