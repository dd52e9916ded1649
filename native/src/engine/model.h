// A MiniCPM4 model: the validated config, the backend, and the weights in backend memory.
// Filled tensor by tensor by the host, then finalized; immutable (and shareable across threads)
// after that.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/config.h"
#include "engine/weights.h"

namespace mcpm {

struct LayerWeights {
  Tensor input_norm, post_norm;
  LinearWeight q, k, v, o, gate, up, down;  // dense or int4 (Marlin)
};

struct ModelWeights {
  Tensor embed;       // [vocab, hidden]
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]; the embedding when tied
  std::vector<LayerWeights> layers;
};

class Model {
 public:
  // weight_arena_bytes > 0 places the weights in one backend allocation of that size (WeightStore).
  Model(ModelConfig config, std::shared_ptr<Backend> backend, int32_t num_threads, uint64_t weight_arena_bytes = 0);

  void set_tensor(const char* name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim, const void* data,
                  size_t data_size);
  void finalize();

  bool finalized() const { return finalized_; }
  const ModelConfig& config() const { return config_; }
  Backend& backend() const { return *backend_; }
  const ModelWeights& weights() const { return weights_; }
  int32_t num_threads() const { return num_threads_; }
  uint64_t weight_bytes() const;
  int32_t int4_linear_count() const { return store_->int4_linear_count(); }
  WeightStore::ArenaUse weight_arena() const { return store_->arena_use(); }

 private:

  ModelConfig config_;
  std::shared_ptr<Backend> backend_;
  int32_t num_threads_;
  ModelWeights weights_;
  std::unique_ptr<WeightStore> store_;
  bool finalized_ = false;
};

// Declares one decoder layer's tensors under prefix p ("model.layers.3.", "layers.0."): the norms,
// the seven linears (dense or int4) and CPM.cu's fused int4 names. Shared by the model and the draft.
void declare_layer(WeightStore& store, const std::string& p, int64_t H, int64_t q_dim, int64_t kv_dim, int64_t I,
                   LayerWeights& w, bool has_input_norm);

// Number of threads to use when the host asks for "one per available core".
int32_t available_cores();

}  // namespace mcpm
