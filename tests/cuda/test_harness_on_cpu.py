"""The GPU tests' harness, run on the CPU operators.

The GPU tests (test_cuda_parity.py, test_cuda_cluster.py) run only where a GPU
is lent, which is rare; CI has none. Their harness (the operators' call
signatures, the float64 reference and the shapes it returns, the tolerances)
is device-independent, so it runs here on the CPU kernels: a schema change or
a reference bug then fails in CI instead of costing a GPU session. (Two such
bugs were found by reading: the backward called without its saved
activations, and the reference's gates and cells of padded input flattened.)
"""
import pytest
import torch

from test_cuda_dropout import DROPOUT_CASES, check_dropout_layerwise
from test_cuda_parity import (ARGS, LAYER_CASES, MODULE_CASES, _ops, check_layer,
                              check_module, layer_step, make_case, ref_forward)

# The CPU kernels keep float gates for bfloat16 and float16 layers (oneDNN's
# convention), where the CUDA ones keep the layer's dtype; the harness is
# what is checked here, so the exact types.
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cfg", LAYER_CASES, ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()) or "padded")
def test_check_layer_on_cpu(dtype, reverse, cfg):
    check_layer(make_case(dtype, **cfg), dtype, reverse, device="cpu")


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_reference_shapes_match_the_operators(packed):
    case = make_case(torch.float64, P=8, packed=packed)
    bs = case["batch_sizes"]
    ours = _ops().lstm_layer_forward(*(case[k] for k in ARGS), bs, False)
    ref = ref_forward(*(case[k] for k in ARGS), bs, False)
    assert [t.shape for t in ours] == [t.shape for t in ref]
    for name, a, r in zip(("output", "h_n", "c_n", "gates", "cells"), ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("proj", [0, 8])
def test_layer_step_on_cpu(proj):
    # What the CUDA-graph tests capture: it must at least run, give the
    # operators' outputs, and give them again bitwise.
    case = make_case(torch.float32, P=proj, packed=True)
    args = [case[k] for k in ARGS]
    first = layer_step(_ops(), args, case["batch_sizes"])
    again = layer_step(_ops(), args, case["batch_sizes"])
    # 5 forward outputs; input, h0, c0, W_ih, W_hh and bias gradients, and
    # W_hr's with a projection.
    assert len(first) == 5 + 6 + (1 if proj else 0)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# The module check compares outputs, so every dtype: the half types take its
# half-precision rule, against torch.nn.LSTM on the CPU here.
@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cfg", MODULE_CASES, ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()))
def test_check_module_on_cpu(dtype, cfg):
    check_module(cfg, dtype, device="cpu")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", DROPOUT_CASES, ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()))
def test_dropout_layerwise_on_cpu(dtype, cfg):
    check_dropout_layerwise(cfg, dtype, "cpu")
