"""The backward's output_mask on CUDA: results left out are empty and skipped,
the rest bitwise the full call's, on each recurrence path; and a module's
gradients, whichever leaves are frozen, equal nn.LSTM's (cuDNN) within the
parity tolerance. The CPU side, and what the mask is for, is
tests/test_gradient_mask.py. Skipped, with the reason shown, where CUDA is
absent.
"""
import pytest
import torch

from test_gradient_mask import FREEZES, SAMPLES, _module_grads, check_masked_backward
from helpers import make_lstm_pair, seeded_randn

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")


@pytest.mark.parametrize("path", ["stepwise", "persistent"])
@pytest.mark.parametrize("sample", SAMPLES, ids=[s[0] for s in SAMPLES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_results_left_out_are_empty_and_the_rest_unchanged(monkeypatch, path, sample, dtype):
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", path)
    check_masked_backward(sample, dtype, device="cuda")


@pytest.mark.parametrize("freeze", ["input_only", "weights_only", "states_only"])
def test_module_gradients_of_the_leaves_that_require_them(freeze):
    ref, ours = make_lstm_pair(16, 32, num_layers=2, dtype=torch.float32)
    ref, ours = ref.cuda(), ours.cuda()
    x = seeded_randn(9, 4, 16).cuda()
    hx = (seeded_randn(2, 4, 32, seed=1).cuda(), seeded_randn(2, 4, 32, seed=2).cuda())
    expected = _module_grads(ref, x, hx, FREEZES[freeze])
    actual = _module_grads(ours, x, hx, FREEZES[freeze])
    assert actual.keys() == expected.keys() and actual
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
