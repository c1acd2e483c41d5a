"""The whole-sequence GEMMs of the CPU layers (csrc/cpu/sequence_gemm.h).

float32 products go to oneDNN's matmul on CPUs with AVX-512 (where MKL, on AMD,
runs at half the rate) and to BLAS elsewhere; ``FUSEDLSTM_CPU_GEMM`` forces
either. Both compute the same float32 products, so each backend is held to
nn.LSTM parity on its own; the oneDNN run forces every product through oneDNN,
however small, in a subprocess (the choice is made once per process).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusedlstm  # noqa: F401

TESTS = Path(__file__).resolve().parent

# Parity with nn.LSTM, forward and every gradient, over the layer features
# whose GEMMs differ (projection's dW_hr and rebuilt h, packed rows, reverse
# direction, bfloat16 widened to float, a size above the oneDNN threshold).
_PARITY_UNDER_BACKEND = """
import sys, torch, fusedlstm
sys.path.insert(0, sys.argv[1])
from helpers import make_lstm_pair, parity_check
print(torch.ops.fusedlstm.cpu_gemm_backend())
torch.set_num_threads(2)
configs = [
    dict(hidden=24, kwargs=dict(), dtype=torch.float32, lengths=None),
    dict(hidden=24, kwargs=dict(bidirectional=True, num_layers=2), dtype=torch.float32,
         lengths=[7, 5, 5, 2]),
    dict(hidden=24, kwargs=dict(proj_size=9, bidirectional=True), dtype=torch.float32,
         lengths=None),
    dict(hidden=96, kwargs=dict(proj_size=40), dtype=torch.float32, lengths=[7, 6, 3, 1]),
    dict(hidden=128, kwargs=dict(num_layers=2), dtype=torch.float32, lengths=None),
    dict(hidden=24, kwargs=dict(bidirectional=True), dtype=torch.bfloat16, lengths=None),
    dict(hidden=24, kwargs=dict(proj_size=9), dtype=torch.bfloat16, lengths=[7, 4, 4, 2]),
]
for c in configs:
    ref, ours = make_lstm_pair(11, c["hidden"], dtype=c["dtype"], **c["kwargs"])
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, 11, generator=gen).to(c["dtype"])
    lengths = None if c["lengths"] is None else torch.tensor(c["lengths"])
    parity_check(ref, ours, x, lengths=lengths, enforce_sorted=True)
print("matched")
"""


def _run(backend: str, code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FUSEDLSTM_CPU_GEMM=backend)
    return subprocess.run([sys.executable, "-c", code, *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("backend", ["onednn", "blas"])
def test_layers_match_nn_lstm_under_each_backend(backend):
    done = _run(backend, _PARITY_UNDER_BACKEND, str(TESTS))
    if backend == "onednn" and "exports no at::native::mkldnn_matmul" in done.stderr:
        pytest.skip("this PyTorch exports no at::native::mkldnn_matmul: "
                    "only the BLAS backend exists here")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [backend, "matched"]


def test_bad_environment_value_is_an_error():
    done = _run("fastest", "import torch, fusedlstm; torch.ops.fusedlstm.cpu_gemm_backend()")
    assert done.returncode != 0
    assert "FUSEDLSTM_CPU_GEMM must be 'auto', 'blas' or 'onednn', got 'fastest'" in done.stderr


def test_auto_picks_onednn_exactly_where_the_cpu_has_avx512():
    """The default: oneDNN where the CPU has AVX-512F (and PyTorch exports
    the matmul, true of every wheel with oneDNN), BLAS elsewhere."""
    if os.environ.get("FUSEDLSTM_CPU_GEMM", "auto") not in ("", "auto"):
        pytest.skip("FUSEDLSTM_CPU_GEMM is set for this run")
    has_avx512 = "avx512f" in Path("/proc/cpuinfo").read_text().split()
    expected = "onednn" if has_avx512 and torch.backends.mkldnn.is_available() else "blas"
    assert torch.ops.fusedlstm.cpu_gemm_backend() == expected


_LAYER_BITS = """
import sys, torch, fusedlstm
torch.set_num_threads(2)
gen = torch.Generator().manual_seed(3)
T, B, I, H = 9, 5, 40, 64
args = [torch.randn(T, B, I, generator=gen), torch.randn(B, H, generator=gen),
        torch.randn(B, H, generator=gen)] + [
        torch.randn(*s, generator=gen) * 0.2 for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
fwd = torch.ops.fusedlstm.lstm_layer_forward(*args, None, None, False)
cot = [torch.randn(t.shape, generator=gen) for t in fwd[:3]]
bwd = torch.ops.fusedlstm.lstm_layer_backward(*cot, *args, None, fwd[0], fwd[3], fwd[4], None, False)
torch.save(list(fwd[:3]) + list(bwd), sys.argv[1])
"""


def test_onednn_and_blas_differ_only_in_rounding_and_repeat_bitwise(tmp_path):
    """The forced oneDNN run really takes another library (its bits differ
    from BLAS's somewhere), agrees with it to float32 tolerance, and gives the
    same bits when run again."""
    runs = {}
    for name, backend in (("blas", "blas"), ("onednn", "onednn"), ("onednn2", "onednn")):
        done = _run(backend, _LAYER_BITS, str(tmp_path / f"{name}.pt"))
        if "exports no at::native::mkldnn_matmul" in done.stderr:
            pytest.skip("this PyTorch exports no at::native::mkldnn_matmul")
        assert done.returncode == 0, done.stderr
        runs[name] = torch.load(tmp_path / f"{name}.pt")
    for a, b in zip(runs["onednn"], runs["blas"]):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(runs["onednn"], runs["blas"]))
    for a, b in zip(runs["onednn"], runs["onednn2"]):
        assert torch.equal(a, b)


def test_onednn_products_stay_float32_under_reduced_matmul_precision():
    """torch.backends.mkldnn.matmul.fp32_precision = "bf16" lets PyTorch's own
    oneDNN matmuls round their inputs to bfloat16; the layer's products (large
    enough to take oneDNN on an AVX-512 CPU) keep their float32 bits."""
    torch.manual_seed(0)
    lstm = fusedlstm.LSTM(128, 128)
    x = torch.randn(8, 16, 128, requires_grad=True)

    def run():
        y, _ = lstm(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *lstm.parameters()])
        return [y.detach(), *grads]

    before = run()
    old = torch.backends.mkldnn.matmul.fp32_precision
    try:
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        after = run()
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = old
    for a, b in zip(after, before):
        assert torch.equal(a, b)
