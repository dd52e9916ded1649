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
  Tensor input_norm, q, k, v, o, post_norm, gate, up, down;
};

struct ModelWeights {
  Tensor embed;       // [vocab, hidden]
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]; the embedding when tied
  std::vector<LayerWeights> layers;
};

class Model {
 public:
  Model(ModelConfig config, std::shared_ptr<Backend> backend, int32_t num_threads);

  void set_tensor(const char* name, mcpm_dtype dtype, const int64_t* shape, int32_t ndim, const void* data,
                  size_t data_size);
  void finalize();

  bool finalized() const { return finalized_; }
  const ModelConfig& config() const { return config_; }
  Backend& backend() const { return *backend_; }
  const ModelWeights& weights() const { return weights_; }
  int32_t num_threads() const { return num_threads_; }
  uint64_t weight_bytes() const;

 private:
  void add_slot(std::string name, std::vector<int64_t> shape, Tensor* target);

  ModelConfig config_;
  std::shared_ptr<Backend> backend_;
  int32_t num_threads_;
  ModelWeights weights_;
  std::unique_ptr<WeightStore> store_;
  bool finalized_ = false;
};

// Number of threads to use when the host asks for "one per available core".
int32_t available_cores();

}  // namespace mcpm
