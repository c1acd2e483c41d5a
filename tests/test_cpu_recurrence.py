"""The fused float32 CPU recurrence (csrc/cpu/recurrence_avx2.cpp).

float32 layers run it on AVX2+FMA CPUs (forward always; backward without
proj_size). The suite's other
shapes are small enough that the recurrence runs on one worker; these are
sized so that it splits its hidden units (and, in backward, the columns of
dh) over two workers that meet once (twice) per step, with the edge cases of
its tiling: H not a multiple of the 8-unit block or of the 16-column dh
block, H and 4H longer than one 64-wide K-chunk, batch sizes that leave
partial row tiles, and packed steps whose rows shrink (forward) or grow
(reverse direction).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import make_lstm_pair, parity_check, run_lstm

import fusedlstm

# (hidden, batch): at two threads, a step of 8*B*H*H >= 2 * 2**19 FLOPs gets two
# workers. 136 and 200 are multiples of 8 but not of 16, 130 of neither; 26
# rows leave partial row tiles in forward (3 rows) and backward (6 rows).
SHAPES = [(136, 8), (130, 8), (200, 4), (72, 26)]


@pytest.mark.parametrize("hidden,batch", SHAPES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_two_workers_padded_matches_nn_lstm(two_threads, hidden, batch, bidirectional):
    ref, ours = make_lstm_pair(11, hidden, num_layers=2, bidirectional=bidirectional,
                               seed=hidden)
    layers = 2 * (2 if bidirectional else 1)
    x = torch.randn(9, batch, 11)
    hx = (torch.randn(layers, batch, hidden), torch.randn(layers, batch, hidden))
    parity_check(ref, ours, x, hx)
    parity_check(ref, ours, x)


@pytest.mark.parametrize("hidden,batch", SHAPES)
def test_two_workers_packed_matches_nn_lstm(two_threads, hidden, batch):
    ref, ours = make_lstm_pair(6, hidden, bidirectional=True, seed=hidden)
    gen = torch.Generator().manual_seed(batch)
    T = 12
    lengths = torch.randint(1, T + 1, (batch,), generator=gen)
    lengths[batch // 2] = T
    x = torch.randn(T, batch, 6, generator=gen)
    hx = (torch.randn(2, batch, hidden, generator=gen),
          torch.randn(2, batch, hidden, generator=gen))
    parity_check(ref, ours, x, hx, lengths=lengths, enforce_sorted=False)


# (hidden, proj_size, batch): a step of 10*B*H*P >= 2 * 2**19 FLOPs, and P of at
# least two 16-column blocks, gives two workers to both phases of a step.
PROJ_SHAPES = [(136, 40, 20), (100, 70, 16)]


@pytest.mark.parametrize("hidden,proj,batch", PROJ_SHAPES)
def test_two_workers_projection_matches_nn_lstm(two_threads, hidden, proj, batch):
    ref, ours = make_lstm_pair(7, hidden, proj_size=proj, num_layers=2,
                               bidirectional=True, seed=proj)
    x = torch.randn(8, batch, 7)
    hx = (torch.randn(4, batch, proj), torch.randn(4, batch, hidden))
    parity_check(ref, ours, x, hx)
    gen = torch.Generator().manual_seed(proj)
    lengths = torch.randint(1, 9, (batch,), generator=gen)
    lengths[0] = 8
    parity_check(ref, ours, x, hx, lengths=lengths, enforce_sorted=False)


def test_two_workers_bfloat16_within_twice_torch_error(two_threads):
    # bfloat16 computes in float32 and so takes the same recurrence.
    ref, ours = make_lstm_pair(8, 130, dtype=torch.bfloat16, seed=3)
    parity_check(ref, ours, torch.randn(10, 8, 8).bfloat16())


@pytest.mark.parametrize("threads", [1, 2])
def test_run_to_run_bitwise_identical(threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, ours = make_lstm_pair(12, 136, num_layers=2, bidirectional=True, seed=5)
        x = torch.randn(15, 8, 12)
        first = run_lstm(ours, x)
        for _ in range(3):
            again = run_lstm(ours, x)
            for key, value in first.items():
                assert torch.equal(again[key], value), key
    finally:
        torch.set_num_threads(old)


def _run_with_environment(value: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FUSEDLSTM_CPU_RECURRENCE=value)
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)


_COMPARE_WITH_NN_LSTM = """
import torch, fusedlstm
torch.manual_seed(0)
ref = torch.nn.LSTM(5, 136, bidirectional=True)
ours = fusedlstm.LSTM(5, 136, bidirectional=True)
ours.load_state_dict(ref.state_dict())
x = torch.randn(7, 8, 5, requires_grad=True)
y_ref, _ = ref(x)
(g_ref,) = torch.autograd.grad(y_ref.sum(), x)
y, _ = ours(x)
(g,) = torch.autograd.grad(y.sum(), x)
torch.testing.assert_close(y, y_ref)
torch.testing.assert_close(g, g_ref)
print("matched")
"""


def test_blas_path_selected_by_environment_matches_nn_lstm():
    done = _run_with_environment("blas", _COMPARE_WITH_NN_LSTM)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "matched"


def test_bad_environment_value_is_an_error():
    done = _run_with_environment("fast", _COMPARE_WITH_NN_LSTM)
    assert done.returncode != 0
    assert "FUSEDLSTM_CPU_RECURRENCE must be 'auto' or 'blas', got 'fast'" in done.stderr
