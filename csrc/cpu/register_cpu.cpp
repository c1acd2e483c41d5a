#include <torch/library.h>

#include "cpu/lstm_cpu.h"

TORCH_LIBRARY_IMPL(fusedlstm, CPU, m) {
  m.impl("lstm_layer_forward", &fusedlstm::cpu::lstm_layer_forward);
  m.impl("lstm_layer_inference", &fusedlstm::cpu::lstm_layer_inference);
  m.impl("lstm_layer_backward", &fusedlstm::cpu::lstm_layer_backward);
}
