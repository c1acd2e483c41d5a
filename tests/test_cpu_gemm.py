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

import fusedlstm

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


# PyTorch's oneDNN matmul refuses CPUs without oneDNN bfloat16 support (every
# dtype, float32 too): there FUSEDLSTM_CPU_GEMM=onednn must raise, saying so.
_ONEDNN_TAKES_THIS_CPU = fusedlstm.ops._onednn_bf16_supported()
_REFUSED_CPU = "FUSEDLSTM_CPU_GEMM=onednn, but PyTorch's oneDNN matmul refuses this CPU"


def _forced_onednn_refused(done: subprocess.CompletedProcess) -> bool:
    """Whether a run with FUSEDLSTM_CPU_GEMM=onednn failed, as it must, on a
    CPU that oneDNN's matmul refuses (and only there)."""
    if _ONEDNN_TAKES_THIS_CPU:
        return False
    assert done.returncode != 0 and _REFUSED_CPU in done.stderr, done.stderr
    return True


def _run(backend: str, code: str, *args: str, env=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, FUSEDLSTM_CPU_GEMM=backend, **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("backend", ["onednn", "blas"])
def test_layers_match_nn_lstm_under_each_backend(backend):
    done = _run(backend, _PARITY_UNDER_BACKEND, str(TESTS))
    if backend == "onednn" and "exports no at::native::mkldnn_matmul" in done.stderr:
        pytest.skip("this PyTorch exports no at::native::mkldnn_matmul: "
                    "only the BLAS backend exists here")
    if backend == "onednn" and _forced_onednn_refused(done):
        return
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [backend, "matched"]


def test_bad_environment_value_is_an_error():
    done = _run("fastest", "import torch, fusedlstm; torch.ops.fusedlstm.cpu_gemm_backend()")
    assert done.returncode != 0
    assert "FUSEDLSTM_CPU_GEMM must be 'auto', 'blas' or 'onednn', got 'fastest'" in done.stderr


def test_auto_picks_onednn_exactly_where_the_cpu_has_avx512():
    """The default: oneDNN where the CPU has AVX-512F and oneDNN's matmul
    takes it (and PyTorch exports the matmul, true of every wheel with
    oneDNN), BLAS elsewhere."""
    if os.environ.get("FUSEDLSTM_CPU_GEMM", "auto") not in ("", "auto"):
        pytest.skip("FUSEDLSTM_CPU_GEMM is set for this run")
    has_avx512 = "avx512f" in Path("/proc/cpuinfo").read_text().split()
    usable = torch.backends.mkldnn.is_available() and _ONEDNN_TAKES_THIS_CPU
    expected = "onednn" if has_avx512 and usable else "blas"
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


def _onednn_matmuls(stdout: str) -> int:
    """How many oneDNN matmul primitives a run with ONEDNN_VERBOSE=1 executed."""
    return sum(",exec,cpu,matmul," in line for line in stdout.splitlines())


def test_forced_onednn_runs_onednn_agrees_with_blas_and_repeats_bitwise(tmp_path):
    """FUSEDLSTM_CPU_GEMM=onednn really runs oneDNN's matmul (its verbose log
    shows the primitives; the BLAS run shows none), agrees with BLAS to
    float32 tolerance, and gives the same bits when run again. (Bits alone
    cannot tell the two apart: on Intel CPUs MKL and oneDNN can sum in the
    same order.)"""
    runs = {}
    for name, backend in (("blas", "blas"), ("onednn", "onednn"), ("onednn2", "onednn")):
        done = _run(backend, _LAYER_BITS, str(tmp_path / f"{name}.pt"),
                    env={"ONEDNN_VERBOSE": "1"})
        if "exports no at::native::mkldnn_matmul" in done.stderr:
            pytest.skip("this PyTorch exports no at::native::mkldnn_matmul")
        if backend == "onednn" and _forced_onednn_refused(done):
            return
        assert done.returncode == 0, done.stderr
        runs[name] = (torch.load(tmp_path / f"{name}.pt"), _onednn_matmuls(done.stdout))
    assert runs["blas"][1] == 0
    # Forward's input projection, backward's dX, dW_ih and dW_hh at least.
    assert runs["onednn"][1] >= 4
    for a, b in zip(runs["onednn"][0], runs["blas"][0]):
        torch.testing.assert_close(a, b)
    for a, b in zip(runs["onednn"][0], runs["onednn2"][0]):
        assert torch.equal(a, b)


# Ways a user lets PyTorch round float32 CPU products to bfloat16 (or TF32),
# which oneDNN then does on CPUs with AMX: nn.LSTM's oneDNN RNN ignores them.
_REDUCED_PRECISION = {
    "set_float32_matmul_precision_medium": (
        "torch.set_float32_matmul_precision('medium')",
        "torch.set_float32_matmul_precision('highest')"),
    "mkldnn_matmul_bf16": (
        "torch.backends.mkldnn.matmul.fp32_precision = 'bf16'",
        "torch.backends.mkldnn.matmul.fp32_precision = 'none'"),
    "mkldnn_all_bf16": (
        "torch.backends.mkldnn.fp32_precision = 'bf16'",
        "torch.backends.mkldnn.fp32_precision = 'none'"),
    "mkldnn_matmul_tf32": (
        "torch.backends.mkldnn.matmul.fp32_precision = 'tf32'",
        "torch.backends.mkldnn.matmul.fp32_precision = 'none'"),
}

# Runs float32 layers (padded, packed, projection, two bidirectional layers)
# forward and backward with and without a reduced precision (argv[1]: the
# statement that sets it, argv[2]: the one that restores it), and prints the
# largest difference, relative to each tensor's largest magnitude.
_UNDER_REDUCED_PRECISION = """
import sys, torch, fusedlstm
from torch.nn.utils.rnn import pack_padded_sequence
torch.manual_seed(0)
cases = [(fusedlstm.LSTM(128, 128), None),
         (fusedlstm.LSTM(96, 128, proj_size=64), None),
         (fusedlstm.LSTM(128, 96, num_layers=2, bidirectional=True), [16] * 8 + [9] * 8)]

def run(lstm, lengths):
    x = torch.randn(16, 16, lstm.input_size, generator=torch.Generator().manual_seed(1))
    x.requires_grad_()
    inp = x if lengths is None else pack_padded_sequence(x, lengths)
    out = lstm(inp)[0]
    y = out if lengths is None else out.data
    grads = torch.autograd.grad(y.square().sum(), [x, *lstm.parameters()])
    return [y.detach(), *grads]

worst = 0.0
for lstm, lengths in cases:
    exact = run(lstm, lengths)
    exec(sys.argv[1])
    try:
        reduced = run(lstm, lengths)
    finally:
        exec(sys.argv[2])
    for a, b in zip(reduced, exact):
        # Two float32 summation orders (sgemm and oneDNN) differ by ~1e-6
        # of the tensor's scale; bfloat16 inputs by ~4e-3 (2^-8).
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * scale)
        worst = max(worst, (a - b).abs().max().item() / scale)
print("largest difference relative to the scale", worst)
"""


@pytest.mark.parametrize("recurrence", ["default", "blas"])
@pytest.mark.parametrize("setting", sorted(_REDUCED_PRECISION))
def test_float32_products_stay_exact_under_reduced_matmul_precision(setting, recurrence):
    """Under torch.set_float32_matmul_precision("medium") (or oneDNN's
    fp32_precision = "bf16"/"tf32"), PyTorch's own float32 CPU matmuls may
    round their inputs (torch 2.13 on AMX CPUs: torch.mm and oneDNN's
    matmul by 2e-3; torch 2.11's torch.mm did not here), while nn.LSTM's
    oneDNN RNN keeps float32. fusedlstm's products stay float32 too: the input
    projection, the per-step products of the BLAS loop
    (FUSEDLSTM_CPU_RECURRENCE=blas) and every weight gradient agree with the
    run without the setting to float32 rounding (1e-4 of each tensor's
    scale), far below bfloat16's (2^-8)."""
    enable, restore = _REDUCED_PRECISION[setting]
    env = {} if recurrence == "default" else {"FUSEDLSTM_CPU_RECURRENCE": recurrence}
    done = subprocess.run([sys.executable, "-c", _UNDER_REDUCED_PRECISION, enable, restore],
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "largest difference" in done.stdout

