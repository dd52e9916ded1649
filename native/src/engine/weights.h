// Named weight slots filled tensor by tensor from the host: shape and dtype validation, upload into
// backend memory, and the completeness check. Shared by the model and the EAGLE draft.
//
// Memory: with a reservation (reserve(), from mcpm_model_options.weight_arena_bytes) the tensors are
// placed one after another, each at a kArenaAlign boundary, in one backend allocation: one cudaMalloc
// for a whole model instead of hundreds, no fragmentation between them, one cudaFree at the end. The
// arena is a bump allocator: a replaced tensor's space is not reused, and a tensor that no longer fits
// gets an allocation of its own. Without a reservation every tensor is its own allocation.
//
// A linear layer has two forms: the dense "<name>.weight" [N, K], or W4A16 int4 in the Marlin
// layout, "<name>.qweight" (I32 [K/16, 2N]) plus "<name>.scales" (F16 [K/128, N]). Setting one form
// drops the other. Fused int4 names (CPM.cu's qkv_proj, gate_up_proj, the draft's fc) are split
// along N into their parts' slots.
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

  // Declares a plain tensor (norm weight, embedding, LM head, bias): its checkpoint name, shape
  // (1-D or 2-D) and where its view goes.
  void add(std::string name, std::vector<int64_t> shape, Tensor* target, bool optional = false);

  // Declares a linear layer with N outputs and K inputs under its three names.
  void add_linear(std::string dense, std::string qweight, std::string scales, int64_t N, int64_t K,
                  LinearWeight* target);
  // The same with the checkpoint convention base + ".weight" / ".qweight" / ".scales".
  void add_linear(const std::string& base, int64_t N, int64_t K, LinearWeight* target);

  // Declares fused int4 names whose columns are the given linears' (declared before, same K)
  // concatenated along N in order; `parts` are the linears' qweight names.
  void add_fused_int4(std::string qweight, std::string scales, const std::vector<std::string>& parts);

  // Validates dtype, shape and byte size against the declaration and uploads a copy. Throws
  // INVALID_ARGUMENT naming the tensor (unknown name, wrong shape, dtype or size, an int4 layer whose
  // shape the Marlin layout does not support, non-finite int4 scales). Validation happens before
  // anything is replaced.
  void set(const std::string& name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim, const void* data,
           size_t data_size);

  // Allocates the arena for the tensors set from now on (once, before the first set()). Throws
  // OUT_OF_MEMORY naming the reservation when the backend cannot allocate it.
  void reserve(size_t bytes);
  static constexpr size_t kArenaAlign = 256;
  // Bytes a tensor of `bytes` takes in the arena.
  static size_t arena_footprint(size_t bytes) { return (bytes + kArenaAlign - 1) / kArenaAlign * kArenaAlign; }
  struct ArenaUse {
    uint64_t reserved = 0;   // the arena's size (0: none)
    uint64_t used = 0;       // bytes handed out, replaced tensors included
    int32_t separate = 0;    // tensors held in allocations of their own
  };
  ArenaUse arena_use() const;

  // Throws INVALID_ARGUMENT naming the first missing required tensor and how many more are missing.
  void check_complete() const;
  uint64_t bytes() const;
  // Linear layers currently held as int4.
  int32_t int4_linear_count() const;

 private:
  enum class Role { Plain, Dense, QWeight, Scales };
  struct Slot {
    std::string name;
    std::vector<int64_t> shape;
    Tensor* target = nullptr;
    bool optional = false;
    Role role = Role::Plain;
    int32_t linear = -1;  // index into linears_ for the three linear roles
    std::unique_ptr<Buffer> storage;  // the tensor's own allocation, or a view into the arena
    bool in_arena = false;
  };
  struct Linear {
    int64_t N = 0, K = 0;
    size_t dense = 0, qweight = 0, scales = 0;  // slot indices
  };
  struct Fused {
    bool scales = false;          // the scales tensor (else the qweight)
    std::vector<size_t> linears;  // parts, in column order
  };

  size_t add_slot(std::string name, std::vector<int64_t> shape, Tensor* target, bool optional, Role role,
                  int32_t linear);
  // Throws unless dtype suits a tensor of this role.
  static void require_dtype(const std::string& name, Role role, mcpm_dtype dtype);
  // Throws unless shape equals `want` and data_size is its byte size in dtype.
  void require_layout(const std::string& name, const std::vector<int64_t>& want, mcpm_dtype dtype, const int64_t* shape,
                      int32_t ndim, size_t data_size) const;
  void validate(const Slot& slot, mcpm_dtype dtype, const int64_t* shape, int32_t ndim, const void* data,
                size_t data_size) const;
  void store(Slot& slot, mcpm_dtype dtype, const void* data);
  // Memory for one tensor: the arena's next free bytes if they suffice, else an allocation of its own.
  std::unique_ptr<Buffer> place(size_t bytes, bool& in_arena);
  void set_fused(const std::string& name, const Fused& fused, mcpm_dtype dtype, const int64_t* shape, int32_t ndim,
                 const void* data, size_t data_size);
  void clear(Slot& slot);
  bool linear_complete(const Linear& l) const;

  Backend& backend_;
  std::string what_;
  std::unique_ptr<Buffer> arena_;  // declared before slots_: their views must go first
  size_t arena_used_ = 0;
  std::vector<Slot> slots_;
  std::vector<Linear> linears_;
  std::unordered_map<std::string, size_t> index_;
  std::unordered_map<std::string, Fused> fused_;
};

std::string shape_string(const int64_t* shape, size_t ndim);

}  // namespace mcpm
