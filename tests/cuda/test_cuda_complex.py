"""Complex LSTMs on CUDA, against torch.nn: the outcome of nn.LSTM and
nn.LSTMCell, whichever it is. From PyTorch's source, complex CUDA input
reaches ATen's fused CUDA cell (cuDNN takes no complex), which has no complex
kernel, so torch refuses it and fusedlstm raises the same error; should torch
take it on some version, the results and gradients must match instead
(tests/test_complex.py checks the CPU, where both take it). Skipped, with
the reason shown, where CUDA is absent."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402
from helpers import outcome  # noqa: E402


def _pair(ref_cls, ours_cls, dtype, **kwargs):
    torch.manual_seed(0)
    ref = ref_cls(3, 4, **kwargs)
    ours = ours_cls(3, 4, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref.to("cuda", dtype), ours.to("cuda", dtype)


def _results(module, inputs):
    out = module(*inputs)
    flat = [out[0], *out[1]] if isinstance(out[1], tuple) else list(out)
    flat = [t.data if hasattr(t, "batch_sizes") else t for t in flat]
    loss = sum((t * t.conj()).real.sum() for t in flat)
    return (*flat, *torch.autograd.grad(loss, list(module.parameters())))


CASES = {
    "lstm": (nn.LSTM, fusedlstm.LSTM, dict(), lambda d: (torch.randn(5, 2, 3, dtype=d),)),
    "lstm_bidirectional_proj": (
        nn.LSTM, fusedlstm.LSTM, dict(bidirectional=True, proj_size=2, num_layers=2),
        lambda d: (torch.randn(5, 2, 3, dtype=d),)),
    "lstm_packed": (nn.LSTM, fusedlstm.LSTM, dict(),
                    lambda d: (pack_padded_sequence(torch.randn(5, 2, 3, dtype=d), [5, 3]),)),
    "cell": (nn.LSTMCell, fusedlstm.LSTMCell, dict(), lambda d: (torch.randn(2, 3, dtype=d),)),
}


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("case", CASES)
def test_complex_on_cuda_as_torch_nn(case, dtype):
    ref_cls, ours_cls, kwargs, make = CASES[case]
    ref, ours = _pair(ref_cls, ours_cls, dtype, **kwargs)
    torch.manual_seed(1)
    inputs = [t.to("cuda") for t in make(dtype)]
    ref_error, expected = outcome(lambda: _results(ref, inputs))
    our_error, actual = outcome(lambda: _results(ours, inputs))
    if ref_error is not None:
        assert type(our_error) is type(ref_error) and str(our_error) == str(ref_error), (
            our_error, ref_error)
    else:
        assert our_error is None, our_error
        torch.testing.assert_close(actual, expected)
