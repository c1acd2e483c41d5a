"""fusedlstm: a drop-in replacement for torch.nn.LSTM on fused C++/CUDA kernels.

    import fusedlstm
    lstm = fusedlstm.LSTM(input_size, hidden_size, ...)   # as torch.nn.LSTM
    model = fusedlstm.replace_lstm(model)                 # swap in place
    model = fusedlstm.restore_lstm(model)                 # and back
"""
from . import functional, ops
from .modules import LSTM, LSTMCell
from .replace import replace_lstm, restore_lstm

__all__ = ["LSTM", "LSTMCell", "replace_lstm", "restore_lstm", "functional", "ops"]
__version__ = "0.1.0"
