#include <torch/library.h>

#include "cuda/lstm_cuda.h"

TORCH_LIBRARY_IMPL(fusedlstm, CUDA, m) {
  m.impl("lstm_layer_forward", &fusedlstm::cuda::lstm_layer_forward);
  m.impl("lstm_layer_inference", &fusedlstm::cuda::lstm_layer_inference);
  m.impl("lstm_layer_backward", &fusedlstm::cuda::lstm_layer_backward);
}
