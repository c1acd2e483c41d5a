"""Complex LSTMs on CUDA, against torch.nn: the outcome of nn.LSTM and
nn.LSTMCell, whichever it is. From PyTorch's source, complex CUDA input
reaches ATen's fused CUDA cell (cuDNN takes no complex), which has no complex
kernel, so torch refuses it and fusedlstm raises the same error; should torch
take it on some version, the results and gradients must match instead
(tests/test_complex.py checks the CPU, where both take it). Skipped, with
the reason shown, where CUDA is absent."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

from helpers import assert_same_outcome, make_cell_pair, make_lstm_pair  # noqa: E402


def _results(module, inputs):
    out = module(*inputs)
    flat = [out[0], *out[1]] if isinstance(out[1], tuple) else list(out)
    flat = [t.data if hasattr(t, "batch_sizes") else t for t in flat]
    loss = sum((t * t.conj()).real.sum() for t in flat)
    return (*flat, *torch.autograd.grad(loss, list(module.parameters())))


CASES = {
    "lstm": (make_lstm_pair, dict(), lambda d: (torch.randn(5, 2, 3, dtype=d),)),
    "lstm_bidirectional_proj": (
        make_lstm_pair, dict(bidirectional=True, proj_size=2, num_layers=2),
        lambda d: (torch.randn(5, 2, 3, dtype=d),)),
    "lstm_packed": (make_lstm_pair, dict(),
                    lambda d: (pack_padded_sequence(torch.randn(5, 2, 3, dtype=d), [5, 3]),)),
    "cell": (make_cell_pair, dict(), lambda d: (torch.randn(2, 3, dtype=d),)),
}


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("case", CASES)
def test_complex_on_cuda_as_torch_nn(case, dtype):
    make_pair, kwargs, make = CASES[case]
    ref, ours = (m.to("cuda") for m in make_pair(3, 4, dtype=dtype, **kwargs))
    torch.manual_seed(1)
    inputs = [t.to("cuda") for t in make(dtype)]
    assert_same_outcome(lambda: _results(ref, inputs), lambda: _results(ours, inputs))
