"""bfloat16 and half on the CPU: the layer operator computes in float and
rounds once.

The CPU kernels widen reduced-precision tensors to float, run the float
kernels, and keep the gates and cells that backward needs in float
(``saved_activation_dtype``). So every result of one layer, forward and
backward, is the float result on the same (widened) values rounded once to
the input's dtype: within one ulp of it, where a second rounding of the saved
gates costs the weight gradients several ulps (the loss that made our bfloat16
gradients trail oneDNN's on CPUs with AVX-512 BF16).
"""
from __future__ import annotations

import pytest
import torch

from fusedlstm import ops
from test_ops import BWD, FWD, IDS, SAMPLES, make_args

REDUCED = [torch.bfloat16, torch.float16]


def _widened(args):
    return [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args]


@pytest.mark.parametrize("dtype", REDUCED, ids=str)
def test_saved_activations_are_float_on_cpu(dtype):
    args = make_args(SAMPLES[0], dtype, requires_grad=False)
    output, h_n, c_n, gates, cells = FWD(*args)
    assert ops.saved_activation_dtype(args[0]) == torch.float32
    assert (output.dtype, h_n.dtype, c_n.dtype) == (dtype,) * 3
    assert (gates.dtype, cells.dtype) == (torch.float32, torch.float32)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", REDUCED, ids=str)
def test_layer_is_the_float_computation_rounded_once(sample, dtype):
    """Forward results and every gradient of one layer are within one ulp
    (rtol = eps, atol = 0) of the float32 operator on the same values."""
    args = make_args(sample, dtype, requires_grad=False)
    low = FWD(*args)
    high = FWD(*_widened(args))
    for name, a, b in zip(("output", "h_n", "c_n"), low[:3], high[:3]):
        torch.testing.assert_close(a, b.to(dtype), rtol=torch.finfo(dtype).eps, atol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")

    gen = torch.Generator().manual_seed(11)
    cot = [torch.randn(t.shape, generator=gen).to(dtype) for t in low[:3]]
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    primals = [x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr]
    grads_low = BWD(*cot, *primals, *low[0:1], *low[3:], batch_sizes, reverse)
    grads_high = BWD(*_widened(cot), *_widened(primals), *high[0:1], *high[3:],
                     batch_sizes, reverse)
    names = ("input", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr")
    for name, a, b in zip(names, grads_low, grads_high):
        assert a.dtype == dtype, (name, a.dtype)
        torch.testing.assert_close(a, b.to(dtype), rtol=torch.finfo(dtype).eps, atol=0,
                                   msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("sample", [SAMPLES[0], SAMPLES[5]], ids=[IDS[0], IDS[5]])
@pytest.mark.parametrize("dtype", REDUCED, ids=str)
def test_opcheck_reduced(sample, dtype):
    """The fake kernel reports the float gates and cells the CPU returns."""
    args = make_args(sample, dtype, requires_grad=False)
    torch.library.opcheck(FWD, args)
    output, h_n, c_n, gates, cells = FWD(*args)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    gen = torch.Generator().manual_seed(5)
    cot = [torch.randn(t.shape, generator=gen).to(dtype) for t in (output, h_n, c_n)]
    torch.library.opcheck(BWD, [*cot, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                output, gates, cells, batch_sizes, reverse])


@pytest.mark.parametrize("which, bad, message", [
    ("gates", lambda g: g.to(torch.bfloat16), "gates has dtype BFloat16"),
    ("cells", lambda c: c[..., :-1], "expected cells of shape"),
    ("gates", lambda g: g[:-1], "expected gates of shape"),
])
def test_backward_rejects_activations_forward_did_not_return(which, bad, message):
    args = make_args(SAMPLES[0], torch.bfloat16, requires_grad=False)
    output, h_n, c_n, gates, cells = FWD(*args)
    saved = {"gates": gates, "cells": cells}
    saved[which] = bad(saved[which])
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    with pytest.raises(RuntimeError, match=message):
        BWD(torch.ones_like(output), None, None, x, h0, c0, w_ih, w_hh, b_ih, b_hh,
            w_hr, output, saved["gates"], saved["cells"], batch_sizes, reverse)
