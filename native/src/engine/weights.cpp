#include "engine/weights.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "common/int4.h"

namespace mcpm {

namespace {

// A tensor's bytes inside the arena: owns nothing (the arena is released with the store).
class ArenaView final : public Buffer {
 public:
  ArenaView(void* data, size_t size) {
    data_ = data;
    size_ = size;
  }
};

}  // namespace

std::string shape_string(const int64_t* shape, size_t ndim) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < ndim; ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

size_t WeightStore::add_slot(std::string name, std::vector<int64_t> shape, Tensor* target, bool optional, Role role,
                             int32_t linear) {
  index_.emplace(name, slots_.size());
  slots_.push_back(Slot{std::move(name), std::move(shape), target, optional, role, linear, nullptr});
  return slots_.size() - 1;
}

void WeightStore::add(std::string name, std::vector<int64_t> shape, Tensor* target, bool optional) {
  add_slot(std::move(name), std::move(shape), target, optional, Role::Plain, -1);
}

void WeightStore::add_linear(std::string dense, std::string qweight, std::string scales, int64_t N, int64_t K,
                             LinearWeight* target) {
  const int32_t id = static_cast<int32_t>(linears_.size());
  Linear l;
  l.N = N;
  l.K = K;
  l.dense = add_slot(std::move(dense), {N, K}, &target->dense, false, Role::Dense, id);
  l.qweight = add_slot(std::move(qweight), {K / int4::kTile, 2 * N}, &target->qweight, false, Role::QWeight, id);
  l.scales = add_slot(std::move(scales), {K / int4::kGroupSize, N}, &target->scales, false, Role::Scales, id);
  linears_.push_back(l);
}

void WeightStore::add_linear(const std::string& base, int64_t N, int64_t K, LinearWeight* target) {
  add_linear(base + ".weight", base + ".qweight", base + ".scales", N, K, target);
}

void WeightStore::add_fused_int4(std::string qweight, std::string scales, const std::vector<std::string>& parts) {
  Fused q, s;
  s.scales = true;
  for (const std::string& part : parts) {
    const Slot& slot = slots_[index_.at(part)];
    MCPM_CHECK(slot.role == Role::QWeight);
    q.linears.push_back(static_cast<size_t>(slot.linear));
  }
  s.linears = q.linears;
  fused_.emplace(std::move(qweight), std::move(q));
  fused_.emplace(std::move(scales), std::move(s));
}

void WeightStore::require_dtype(const std::string& name, Role role, mcpm_dtype dtype) {
  if (role == Role::Plain || role == Role::Dense) {
    if (dtype != MCPM_DTYPE_F32 && dtype != MCPM_DTYPE_F16 && dtype != MCPM_DTYPE_BF16)
      invalid_argument("tensor '" + name + "': unsupported dtype " + std::to_string(dtype) +
                       " (expected MCPM_DTYPE_F32, _F16 or _BF16)");
    return;
  }
  const mcpm_dtype want = role == Role::QWeight ? MCPM_DTYPE_I32 : MCPM_DTYPE_F16;
  if (dtype != want)
    invalid_argument("tensor '" + name + "': dtype must be " +
                     (role == Role::QWeight ? "MCPM_DTYPE_I32 (packed int4)" : "MCPM_DTYPE_F16 (int4 scales)") +
                     ", got " + std::to_string(dtype));
}

void WeightStore::require_layout(const std::string& name, const std::vector<int64_t>& want, mcpm_dtype dtype,
                                 const int64_t* shape, int32_t ndim, size_t data_size) const {
  const bool same_shape = ndim >= 0 && static_cast<size_t>(ndim) == want.size() &&
                          std::equal(want.begin(), want.end(), shape);
  if (!same_shape)
    invalid_argument("tensor '" + name + "' has shape " + shape_string(shape, static_cast<size_t>(std::max(ndim, 0))) +
                     " but " + what_ + " requires " + shape_string(want.data(), want.size()));
  const DType dt = static_cast<DType>(dtype);
  const int64_t rows = want.size() == 2 ? want[0] : 1;
  const size_t bytes = static_cast<size_t>(rows) * static_cast<size_t>(want.back()) * dtype_size(dt);
  if (data_size != bytes)
    invalid_argument("tensor '" + name + "': data_size is " + std::to_string(data_size) + " bytes but " +
                     shape_string(want.data(), want.size()) + " " + dtype_name(dt) + " needs " +
                     std::to_string(bytes));
}

void WeightStore::validate(const Slot& slot, mcpm_dtype dtype, const int64_t* shape, int32_t ndim, const void* data,
                           size_t data_size) const {
  if (slot.role == Role::QWeight || slot.role == Role::Scales) {
    const Linear& l = linears_[static_cast<size_t>(slot.linear)];
    if (l.K % int4::kGroupSize != 0 || l.N % int4::kMarlinMinN != 0)
      invalid_argument("tensor '" + slot.name + "': an int4 (Marlin) layer needs in_features divisible by 128 and "
                       "out_features divisible by 64, but this layer has out_features " + std::to_string(l.N) +
                       " and in_features " + std::to_string(l.K));
  }
  require_dtype(slot.name, slot.role, dtype);
  require_layout(slot.name, slot.shape, dtype, shape, ndim, data_size);
  if (slot.role == Role::Scales) {
    // inf or NaN (exponent all ones) would turn every output of the layer into NaN.
    const uint16_t* s = static_cast<const uint16_t*>(data);
    for (size_t i = 0; i < data_size / 2; ++i)
      if ((s[i] & 0x7c00u) == 0x7c00u)
        invalid_argument("tensor '" + slot.name + "': scale " + std::to_string(i) + " is not a finite number (fp16 bits 0x" +
                         [&] {
                           char hex[8];
                           std::snprintf(hex, sizeof hex, "%04x", s[i]);
                           return std::string(hex);
                         }() + ")");
  }
}

void WeightStore::reserve(size_t bytes) {
  MCPM_CHECK(!arena_ && arena_used_ == 0);
  if (bytes == 0) return;
  try {
    arena_ = backend_.alloc(bytes);
  } catch (const Error& e) {
    throw_error(e.status(), "cannot reserve the weight arena of " + std::to_string(bytes) + " bytes for " + what_ +
                                " (weight_arena_bytes): " + e.what());
  }
}

std::unique_ptr<Buffer> WeightStore::place(size_t bytes, bool& in_arena) {
  const size_t footprint = arena_footprint(bytes);
  in_arena = arena_ && arena_->size() - arena_used_ >= footprint;
  if (!in_arena) return backend_.alloc(bytes);
  auto view = std::make_unique<ArenaView>(static_cast<char*>(arena_->data()) + arena_used_, bytes);
  arena_used_ += footprint;
  return view;
}

WeightStore::ArenaUse WeightStore::arena_use() const {
  ArenaUse use;
  use.reserved = arena_ ? arena_->size() : 0;
  use.used = arena_used_;
  for (const Slot& s : slots_)
    if (s.storage && !s.in_arena) ++use.separate;
  return use;
}

void WeightStore::clear(Slot& slot) {
  slot.storage.reset();
  slot.in_arena = false;
  *slot.target = Tensor{};
}

void WeightStore::store(Slot& slot, mcpm_dtype dtype, const void* data) {
  const DType dt = static_cast<DType>(dtype);
  const int64_t cols = slot.shape.back();
  const int64_t rows = slot.shape.size() == 2 ? slot.shape[0] : 1;
  const size_t bytes = static_cast<size_t>(rows) * static_cast<size_t>(cols) * dtype_size(dt);
  bool in_arena = false;
  std::unique_ptr<Buffer> storage = place(bytes, in_arena);
  backend_.upload(storage->data(), data, bytes);
  slot.storage = std::move(storage);
  slot.in_arena = in_arena;
  *slot.target = Tensor{slot.storage->data(), dt, rows, cols};
  if (slot.linear < 0) return;
  // The later form of a linear layer replaces the earlier one.
  const Linear& l = linears_[static_cast<size_t>(slot.linear)];
  if (slot.role == Role::QWeight) backend_.adopt_int4_qweight(*slot.target, l.K, l.N);
  if (slot.role == Role::Scales) backend_.adopt_int4_scales(*slot.target, l.K, l.N);
  if (slot.role == Role::Dense) {
    clear(slots_[l.qweight]);
    clear(slots_[l.scales]);
  } else {
    clear(slots_[l.dense]);
  }
}

void WeightStore::set(const std::string& name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim,
                      const void* data, size_t data_size) {
  auto fused = fused_.find(name);
  if (fused != fused_.end()) {
    set_fused(name, fused->second, dtype, shape, ndim, data, data_size);
    return;
  }
  auto it = index_.find(name);
  if (it == index_.end()) invalid_argument("unknown tensor '" + name + "' for " + what_);
  Slot& slot = slots_[it->second];
  validate(slot, dtype, shape, ndim, data, data_size);
  store(slot, dtype, data);
}

// A fused int4 tensor is the column concatenation of its parts' tensors (Marlin packing commutes
// with concatenation along N at multiples of 64: algorithms.md §4.2). Rows are K/16 (qweight, two
// int32 per output column) or K/128 (scales, one fp16 per column).
void WeightStore::set_fused(const std::string& name, const Fused& fused, mcpm_dtype dtype, const int64_t* shape,
                            int32_t ndim, const void* data, size_t data_size) {
  const Linear& first = linears_[fused.linears.front()];
  const int64_t K = first.K;
  int64_t total_n = 0;
  for (size_t id : fused.linears) total_n += linears_[id].N;
  const int64_t rows = fused.scales ? K / int4::kGroupSize : K / int4::kTile;
  const int64_t per_col = fused.scales ? 1 : 2;  // elements per output column in one row
  const size_t es = fused.scales ? 2 : 4;
  require_dtype(name, fused.scales ? Role::Scales : Role::QWeight, dtype);
  require_layout(name, {rows, per_col * total_n}, dtype, shape, ndim, data_size);
  // Split into the parts' own tensors and validate every part before storing any.
  std::vector<std::vector<char>> parts;
  int64_t col0 = 0;
  for (size_t id : fused.linears) {
    const Linear& l = linears_[id];
    Slot& slot = slots_[fused.scales ? l.scales : l.qweight];
    const size_t part_row = static_cast<size_t>(per_col * l.N) * es, full_row = static_cast<size_t>(per_col * total_n) * es;
    std::vector<char> part(part_row * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(part.data() + static_cast<size_t>(r) * part_row,
                  static_cast<const char*>(data) + static_cast<size_t>(r) * full_row + static_cast<size_t>(per_col * col0) * es,
                  part_row);
    const int64_t part_shape[2] = {rows, per_col * l.N};
    validate(slot, dtype, part_shape, 2, part.data(), part.size());
    parts.push_back(std::move(part));
    col0 += l.N;
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    const Linear& l = linears_[fused.linears[i]];
    store(slots_[fused.scales ? l.scales : l.qweight], dtype, parts[i].data());
  }
}

bool WeightStore::linear_complete(const Linear& l) const {
  return slots_[l.dense].storage || (slots_[l.qweight].storage && slots_[l.scales].storage);
}

void WeightStore::check_complete() const {
  size_t missing = 0;
  std::string first;
  auto miss = [&](const std::string& name) {
    if (first.empty()) first = name;
    ++missing;
  };
  for (const Slot& s : slots_) {
    if (s.role == Role::Plain) {
      if (!s.storage && !s.optional) miss(s.name);
      continue;
    }
    if (s.role != Role::Dense) continue;  // each linear is reported once, at its dense slot
    const Linear& l = linears_[static_cast<size_t>(s.linear)];
    if (linear_complete(l)) continue;
    const Slot& q = slots_[l.qweight];
    const Slot& sc = slots_[l.scales];
    if (q.storage && !sc.storage)
      miss(sc.name + "' (the int4 scales of '" + q.name);
    else if (sc.storage && !q.storage)
      miss(q.name + "' (the int4 weights for '" + sc.name);
    else
      miss(s.name);
  }
  if (!first.empty())
    invalid_argument("missing tensor '" + first + "'" +
                     (missing > 1 ? " (and " + std::to_string(missing - 1) + " more)" : std::string()));
}

uint64_t WeightStore::bytes() const {
  uint64_t total = 0;
  for (const Slot& s : slots_)
    if (s.storage) total += s.storage->size();
  return total;
}

int32_t WeightStore::int4_linear_count() const {
  int32_t n = 0;
  for (const Linear& l : linears_)
    if (slots_[l.qweight].storage && slots_[l.scales].storage) ++n;
  return n;
}

}  // namespace mcpm
