"""bfloat16 and half on the CPU: the layer operator computes in float, and
keeps for backward what nn.LSTM's own kernel for the call keeps.

The CPU kernels widen reduced-precision tensors to float and run the float
kernels; output and states are rounded once to the input's dtype. The gates
and cells kept for backward (``saved_activation_dtype``) are float32 where
nn.LSTM runs oneDNN (bfloat16, padded, no projection, a CPU with oneDNN
bfloat16 support), whose float activations make its gradients ~10x closer to
float64 than a bfloat16 copy would allow; there every result of one layer,
forward and backward, is the float result rounded once (within one ulp).
Elsewhere they are kept in the input's dtype, as nn.LSTM's native path does,
and the parity suite holds the results to nn.LSTM's own error.

On CPUs with bfloat16 dot products (AVX-512 BF16), bfloat16 layers without a
projection multiply h_{t-1} rounded to bfloat16 by W_hh, as oneDNN does
(``torch.ops.fusedlstm.cpu_bfloat16_dot()``), and backward rounds the gate
gradients to bfloat16 before its products, as oneDNN's bfloat16 backward
does: there the results are those of the float64 model with these roundings
(``reference.lstm_layer(round_h_to=..., round_gate_grads_to=...)``), rounded
once.
"""
from __future__ import annotations

import pytest
import torch

from fusedlstm import ops, reference
from test_ops import BWD, FWD, IDS, SAMPLES, make_args

REDUCED = [torch.bfloat16, torch.float16]


def _packed(sample) -> bool:
    return sample[7] is not None


def _projected(sample) -> bool:
    return sample[5] > 0


def _bf16_dot(sample, dtype) -> bool:
    return (dtype == torch.bfloat16 and not _projected(sample)
            and torch.ops.fusedlstm.cpu_bfloat16_dot())


def _expected_saved(sample, dtype) -> torch.dtype:
    if (dtype == torch.bfloat16 and not _packed(sample) and not _projected(sample)
            and ops._onednn_bf16_supported()):
        return torch.float32
    return dtype


def _widened(args):
    return [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args]


def _gradients_of_both(args, low, high, cot):
    """lstm_layer_backward for cotangents cot: of the reduced call (forward
    results low) and of the float32 call on the widened values (high)."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    primals = [x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr]
    grads_low = BWD(*cot, *primals, *low[0:1], *low[3:], batch_sizes, reverse)
    grads_high = BWD(*_widened(cot), *_widened(primals), *high[0:1], *high[3:],
                     batch_sizes, reverse)
    return grads_low, grads_high


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", REDUCED, ids=str)
def test_saved_activation_dtype_follows_nn_lstm_kernel(sample, dtype):
    """The kernel and the fake kernel's rule agree, and follow the rule."""
    args = make_args(sample, dtype, requires_grad=False)
    output, h_n, c_n, gates, cells = FWD(*args)
    expected = _expected_saved(sample, dtype)
    assert ops.saved_activation_dtype(args[0], _packed(sample), _projected(sample)) == expected
    assert (output.dtype, h_n.dtype, c_n.dtype) == (dtype,) * 3
    assert (gates.dtype, cells.dtype) == (expected, expected)


def test_this_ci_cpu_keeps_float_activations_somewhere():
    """Where the CPU has oneDNN bfloat16 support (this CI's AVX-512 CPU), the
    float-activation rule is live, so the rounded-once test below runs on
    every padded, unprojected sample."""
    if not ops._onednn_bf16_supported():
        pytest.skip("no oneDNN bfloat16 on this CPU: nn.LSTM keeps bfloat16 activations, and so do we")
    assert _expected_saved(SAMPLES[0], torch.bfloat16) == torch.float32


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", REDUCED, ids=str)
def test_layer_is_the_float_computation_rounded_once(sample, dtype):
    """Forward results, and where forward keeps float activations every
    gradient, of one layer are within one ulp (rtol = eps, atol = 0) of the
    float32 operator on the same values."""
    if _bf16_dot(sample, dtype):
        pytest.skip("bfloat16 dot products here: test_bfloat16_dot_layer covers it")
    args = make_args(sample, dtype, requires_grad=False)
    low = FWD(*args)
    high = FWD(*_widened(args))
    for name, a, b in zip(("output", "h_n", "c_n"), low[:3], high[:3]):
        torch.testing.assert_close(a, b.to(dtype), rtol=torch.finfo(dtype).eps, atol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")

    if _expected_saved(sample, dtype) != torch.float32:
        return  # backward starts from rounded activations: the parity suite's rule
    grads_low, grads_high = _gradients_of_both(args, low, high, _cotangents(low, dtype))
    names = ("input", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr")
    for name, a, b in zip(names, grads_low, grads_high):
        assert a.dtype == dtype, (name, a.dtype)
        torch.testing.assert_close(a, b.to(dtype), rtol=torch.finfo(dtype).eps, atol=0,
                                   msg=lambda m, name=name: f"grad {name}: {m}")


# Past one 192-row chunk of the bfloat16 input projection, with an odd input
# size (x gets a zero column) and a hidden size that ends in a partial block.
LONG = [("long_odd_input", 50, 9, 33, 40, 0, True, None, False),
        ("long_packed_reverse", 45, 11, 33, 21, 0, True, [45] * 4 + [30] * 4 + [7] * 3, True)]
# AMX tiles (where they run) take 16 rows at a time, backward two row tiles
# and only for H % 8 == 0: batches across one and two tiles, with a partial
# last tile at the end of the gate-gradient buffer, padded and packed.
LONG += [("tiles_two_row_tiles", 6, 37, 32, 16, 0, True, None, False),
         ("tiles_packed_tail", 5, 35, 64, 24, 0, True, [5] * 20 + [3] * 10 + [1] * 5, True),
         ("tiles_hidden_not_multiple_of_8", 4, 18, 40, 36, 0, True, None, True)]
# From 1024 rows the weight gradients come from MKL's bfloat16 GEMM reading
# dG transposed (where AMX runs; cpu/mkl_bf16_gemm.h): an odd input size, so
# that x's rows are not a whole number of vectors, and 1040 rows in 2 steps.
LONG += [("mkl_weight_gradients", 2, 520, 17, 24, 0, True, None, True)]


@pytest.mark.parametrize("sample", SAMPLES + LONG, ids=IDS + [s[0] for s in LONG])
def test_bfloat16_dot_layer(sample):
    """Where bfloat16 layers use bfloat16 dot products: the forward equals the
    float64 model whose h_{t-1} enters the product rounded to bfloat16,
    rounded once (within one ulp). Where forward keeps float activations,
    every gradient equals that model's gradient with the gate gradients
    rounded to bfloat16 at every step, rounded once: within one ulp, or the
    float32 accumulation's error bound where a sum cancels."""
    dtype = torch.bfloat16
    if not _bf16_dot(sample, dtype):
        pytest.skip("this sample or CPU does not take bfloat16 dot products")
    args = make_args(sample, dtype, requires_grad=False)
    low = FWD(*args)
    model, grads_model = _bf16_dot_model(args, low, round_gate_grads=True)
    eps = torch.finfo(dtype).eps
    for name, a, b in zip(("output", "h_n", "c_n"), low[:3], model):
        torch.testing.assert_close(a, b.to(dtype), rtol=eps, atol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")

    if _expected_saved(sample, dtype) != torch.float32:
        return  # backward starts from rounded activations: the parity suite's rule
    if sample[1] > 8:
        # Over many steps, a gate gradient that float32 and float64 round to
        # neighbouring bfloat16 values moves every later step's gradients by
        # a fraction of that ulp, which moves later roundings: the two agree
        # to the size of the rounding itself, not to an ulp. There the parity
        # suite holds us to nn.LSTM's own error (oneDNN rounds the same way),
        # and the test below that the rounding is there.
        return
    grads = _bf16_dot_gradients(args, low)
    names = ("input", "h0", "c0", "w_ih", "w_hh", "bias")
    for name, a, b in zip(names, grads, grads_model):
        assert a.dtype == dtype, (name, a.dtype)
        # float32 sums of the model's terms: error <= depth * 2**-24 * sum|terms|,
        # at most 2**-12 of the largest entry for these depths (<= 2**12 terms
        # of similar size); beyond that, one ulp of the entry itself.
        atol = 2.0**-12 * b.abs().max().item() if b.numel() else 0.0
        torch.testing.assert_close(a, b.to(dtype), rtol=eps, atol=atol,
                                   msg=lambda m, name=name: f"grad {name}: {m}")


def _cotangents(low, dtype):
    gen = torch.Generator().manual_seed(11)
    return [torch.randn(t.shape, generator=gen).to(dtype) for t in low[:3]]


def _bf16_dot_gradients(args, low):
    """The operator's gradients (bias as one tensor), for _cotangents."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    grads = BWD(*_cotangents(low, x.dtype), x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                w_hr, *low[0:1], *low[3:], batch_sizes, reverse)
    return grads[:6]


def _bf16_dot_model(args, low, *, round_gate_grads):
    """The float64 model of a bfloat16-dot layer: (output, h_n, c_n), and the
    gradients for _cotangents of input, h0, c0, w_ih, w_hh and the bias (b_ih's
    gradient, equal to b_hh's)."""
    wide = [a.double().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
            else a for a in args]
    outs = reference.lstm_layer(
        *wide, round_h_to=torch.bfloat16,
        round_gate_grads_to=torch.bfloat16 if round_gate_grads else None)
    cot = [c.double() for c in _cotangents(low, args[0].dtype)]
    primals = [t for t in wide[:6] if t is not None]
    grads = iter(torch.autograd.grad(outs, primals, cot))
    # Without a bias the operator returns an empty bias gradient.
    expected = [next(grads) if t is not None else torch.empty(0, dtype=torch.float64)
                for t in wide[:6]]
    return [o.detach() for o in outs], expected


def test_bfloat16_dot_backward_rounds_gate_gradients():
    """The gate gradients are rounded to bfloat16 (as in oneDNN): on a layer
    large enough for the statistics, every gradient is nearer (in summed
    absolute difference) the model that rounds them than the one that does
    not, and the products with them (input and weight gradients) clearly so.
    Both distances include the rounding of our result to bfloat16, so neither
    is zero; c0's gradient sees the rounding only through dh, so its margin is
    the smallest (ratios 0.72-0.88 over seeds and lengths, 0.55-0.66 for the
    products)."""
    if not torch.ops.fusedlstm.cpu_bfloat16_dot():
        pytest.skip("no bfloat16 dot products on this CPU")
    sample = ("stats", 24, 6, 40, 48, 0, True, None, False)
    args = make_args(sample, torch.bfloat16, requires_grad=False)
    low = FWD(*args)
    grads = _bf16_dot_gradients(args, low)
    _, rounded = _bf16_dot_model(args, low, round_gate_grads=True)
    _, unrounded = _bf16_dot_model(args, low, round_gate_grads=False)
    names = ("input", "h0", "c0", "w_ih", "w_hh", "bias")
    for name, a, r, u in zip(names, grads, rounded, unrounded):
        assert a.numel() > 0, name
        to_rounded = (a.double() - r).abs().sum().item()
        to_unrounded = (a.double() - u).abs().sum().item()
        bound = 0.75 if name in ("input", "w_ih", "w_hh") else 1.0
        assert to_rounded < bound * to_unrounded, (name, to_rounded, to_unrounded)


def test_this_ci_cpu_has_bfloat16_dot_products():
    """This CI's CPU (Zen 5) has AVX-512 BF16, so the test above runs there."""
    flags = open("/proc/cpuinfo").read().split()
    if "avx512_bf16" not in flags:
        pytest.skip("no AVX-512 BF16 on this CPU")
    if torch.ops.fusedlstm.cpu_recurrence() != "avx512":
        pytest.skip("FUSEDLSTM_CPU_RECURRENCE keeps another recurrence in this run")
    import os
    if os.environ.get("FUSEDLSTM_CPU_RECURRENCE", "auto") not in ("", "auto"):
        pytest.skip("FUSEDLSTM_CPU_RECURRENCE is set for this run")
    assert torch.ops.fusedlstm.cpu_bfloat16_dot()


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
    ("gates", "other dtype", "gates has dtype"),
    ("cells", lambda c: c[..., :-1], "expected cells of shape"),
    ("gates", lambda g: g[:-1], "expected gates of shape"),
])
def test_backward_rejects_activations_forward_did_not_return(which, bad, message):
    args = make_args(SAMPLES[0], torch.bfloat16, requires_grad=False)
    output, h_n, c_n, gates, cells = FWD(*args)
    saved = {"gates": gates, "cells": cells}
    if bad == "other dtype":
        other = torch.bfloat16 if gates.dtype == torch.float32 else torch.float32
        bad = lambda t: t.to(other)  # noqa: E731
    saved[which] = bad(saved[which])
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    with pytest.raises(RuntimeError, match=message):
        BWD(torch.ones_like(output), None, None, x, h0, c0, w_ih, w_hh, b_ih, b_hh,
            w_hr, output, saved["gates"], saved["cells"], batch_sizes, reverse)


# 2340 rows of H = 40 (chunks of 2048 rows); 576 rows of H = 520, whose 4 MiB
# gates buffer holds 504 rows (bfloat16 dot products), raised to 512 where
# MKL projects (kMklProjectionMinRows): chunks of 7 or 8 steps, and a last
# one of 2 or 1.
CHUNKED = [("chunks", 260, 9, 33, 40, 0, True, None),
           ("chunks_wide", 9, 64, 24, 520, 0, True, None)]


@pytest.mark.parametrize("sample", CHUNKED, ids=[s[0] for s in CHUNKED])
@pytest.mark.parametrize("dtype", REDUCED, ids=str)
@pytest.mark.parametrize("reverse", [False, True])
def test_inference_op_equals_forward_op_across_projection_chunks(sample, dtype, reverse):
    """The inference operator projects a chunk of steps at a time (a bfloat16
    layer with bfloat16 dot products from its bfloat16 copy of x, padded where
    the input size is odd); every chunk's rows give the forward operator's
    bits."""
    args = make_args(sample + (reverse,), dtype, requires_grad=False)
    expected = FWD(*args)[:3]
    actual = torch.ops.fusedlstm.lstm_layer_inference(*args)
    for name, a, b in zip(("output", "h_n", "c_n"), actual, expected):
        assert torch.equal(a, b), name


# With two threads, bfloat16 layers split the batch's rows over the workers
# instead of the unit blocks (no meeting between steps): on AMX tiles where
# the 16-row tiles divide evenly (NOTES change 43), on the AVX-512 BF16
# register tiles where the rows do, 16 or more each (change 50); one thread
# runs every unit block of every row. Samples that take the split: 4 row
# tiles over two projection chunks; and packed, reversed, with a partial last
# unit block and batch sizes that leave the second worker one row, then none
# (its rows carry their h), and the first fewer rows than the cells' pipeline
# takes.
ROW_SPLIT = [
    ("rows_split_chunks", 40, 64, 20, 48, 0, True, None, False),
    ("rows_split_packed_reverse", 30, 32, 20, 40, 0, True,
     [30] * 5 + [20] * 6 + [17] * 6 + [9] * 7 + [3] * 8, True),
]


@pytest.mark.parametrize("sample", ROW_SPLIT, ids=[s[0] for s in ROW_SPLIT])
def test_bfloat16_dot_layer_with_rows_split_over_two_threads(sample, two_threads):
    """The forward (every result, the kept activations included) and the
    inference operator give one thread's bits: the one-thread path is the
    one held to the float64 model (test_bfloat16_dot_layer) and to nn.LSTM
    (the parity suite). (Over 40 steps the model itself is no longer within
    an ulp everywhere: an h that float32 and float64 round to neighbouring
    bfloat16 values moves later steps; see test_bfloat16_dot_layer.)"""
    dtype = torch.bfloat16
    if not _bf16_dot(sample, dtype):
        pytest.skip("this CPU does not take bfloat16 dot products")
    args = make_args(sample, dtype, requires_grad=False)
    two = FWD(*args)
    inference = torch.ops.fusedlstm.lstm_layer_inference(*args)
    torch.set_num_threads(1)
    one = FWD(*args)
    torch.set_num_threads(2)
    assert len(two) == len(one)
    for index, (a, b) in enumerate(zip(two, one)):
        assert torch.equal(a, b), f"result {index} differs from one thread's"
    for name, a, b in zip(("output", "h_n", "c_n"), inference, one):
        assert torch.equal(a, b), f"inference {name} differs from the forward's"


# ------------------------------------------- a float32 c0 with reduced input
#
# The CPU operators take c0 in float32 with bfloat16/half input (as oneDNN's
# LSTM, which nn.LSTM runs there, does) and return c_n and c0's gradient in
# float32; c is carried in float32 within the layer either way.


def _with_float32_c0(args, representable):
    args = list(args)
    c0 = args[2].float()
    if not representable:
        # Low bits below the input dtype's precision, so rounding shows.
        c0 = c0 + torch.full_like(c0, 2.0**-12)
    args[2] = c0
    return args


def _float32_c0_saved(sample, dtype):
    return torch.float32 if dtype == torch.bfloat16 else _expected_saved(sample, dtype)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", REDUCED, ids=str)
def test_float32_c0_of_representable_values_gives_the_same_bits(sample, dtype):
    """With c0's values representable in the input's dtype, a float32 c0
    changes nothing but c_n's final rounding: output and h_n are bitwise
    those of the call with c0 in the input's dtype, c_n rounds to its c_n.
    Where both calls keep the same activations, every gradient is bitwise
    the same too (c0's, to its rounding); bfloat16 elsewhere keeps float32
    activations for a float32 c0 (saved_activation_dtype)."""
    args = make_args(sample, dtype, requires_grad=False)
    wide_args = _with_float32_c0(args, representable=True)
    low = FWD(*args)
    wide = FWD(*wide_args)
    assert wide[2].dtype == torch.float32
    assert (wide[3].dtype, wide[4].dtype) == (_float32_c0_saved(sample, dtype),) * 2
    assert torch.equal(wide[0], low[0]) and torch.equal(wide[1], low[1])
    assert torch.equal(wide[2].to(dtype), low[2])
    assert not torch.equal(wide[2], wide[2].to(dtype).float()), "c_n was rounded"

    if wide[3].dtype != low[3].dtype:
        return
    cot = _cotangents(low, dtype)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    rest = (w_ih, w_hh, b_ih, b_hh, w_hr)
    grads_low = BWD(*cot, x, h0, c0, *rest, *low[0:1], *low[3:], batch_sizes, reverse)
    grads_wide = BWD(cot[0], cot[1], cot[2].float(), x, h0, wide_args[2], *rest,
                     *wide[0:1], *wide[3:], batch_sizes, reverse)
    names = ("input", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr")
    for name, a, b in zip(names, grads_wide, grads_low):
        if name == "c0":
            assert a.dtype == torch.float32
            a = a.to(dtype)
        assert torch.equal(a, b), name


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", REDUCED, ids=str)
def test_float32_c0_is_the_float_computation(sample, dtype):
    """Where the layer computes in float (no bfloat16 dot products), a
    float32 c0 of any value gives the float32 operator's results on the
    widened values: output and h_n rounded once (one ulp), c_n and, where
    forward keeps float activations, every gradient, as float32 computes
    them (float32's ulp; rounded once in the input's dtype but c0's)."""
    if _bf16_dot(sample, dtype):
        pytest.skip("bfloat16 dot products here: the product takes h rounded to bfloat16")
    args = _with_float32_c0(make_args(sample, dtype, requires_grad=False), representable=False)
    low = FWD(*args)
    high = FWD(*_widened(args))
    eps, eps32 = torch.finfo(dtype).eps, torch.finfo(torch.float32).eps
    torch.testing.assert_close(low[0], high[0].to(dtype), rtol=eps, atol=0)
    torch.testing.assert_close(low[1], high[1].to(dtype), rtol=eps, atol=0)
    torch.testing.assert_close(low[2], high[2], rtol=eps32, atol=0)
    if low[3].dtype != torch.float32:
        return
    cot = _cotangents(low, dtype)
    cot[2] = cot[2].float()
    grads_low, grads_high = _gradients_of_both(args, low, high, cot)
    names = ("input", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr")
    for name, a, b in zip(names, grads_low, grads_high):
        if name == "c0":
            assert a.dtype == torch.float32
            torch.testing.assert_close(a, b, rtol=eps32, atol=0)
        else:
            torch.testing.assert_close(a, b.to(dtype), rtol=eps, atol=0,
                                       msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("sample", SAMPLES + LONG, ids=IDS + [s[0] for s in LONG])
def test_float32_c0_bfloat16_dot_layer(sample):
    """Where bfloat16 layers use bfloat16 dot products, with a float32 c0 of
    any value: the forward is the float64 model whose h_{t-1} enters the
    product rounded to bfloat16 (test_bfloat16_dot_layer), output and h_n
    rounded once and c_n in float32, within one bfloat16 ulp: float32 and
    float64 may round an h_t to neighbouring bfloat16 values, which moves
    later steps' values by a fraction of that ulp (atol: 2**-12 of the
    largest entry, as for the gradients there)."""
    dtype = torch.bfloat16
    if not _bf16_dot(sample, dtype):
        pytest.skip("this sample or CPU does not take bfloat16 dot products")
    args = _with_float32_c0(make_args(sample, dtype, requires_grad=False), representable=False)
    low = FWD(*args)
    model, _ = _bf16_dot_model(args, low, round_gate_grads=True)
    eps = torch.finfo(dtype).eps
    assert low[2].dtype == torch.float32
    for name, a, b in zip(("output", "h_n", "c_n"), low[:3], model):
        atol = 2.0**-12 * b.abs().max().item()
        torch.testing.assert_close(a, b.to(a.dtype), rtol=eps, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("sample", [SAMPLES[0], SAMPLES[2], SAMPLES[5]],
                         ids=[IDS[0], IDS[2], IDS[5]])
@pytest.mark.parametrize("dtype", REDUCED, ids=str)
def test_opcheck_float32_c0(sample, dtype):
    """The fake kernels report c_n, c0's gradient and the kept activations
    in the dtypes the CPU returns for a float32 c0."""
    args = _with_float32_c0(make_args(sample, dtype, requires_grad=False), representable=False)
    torch.library.opcheck(FWD, args)
    torch.library.opcheck(torch.ops.fusedlstm.lstm_layer_inference, args)
    output, h_n, c_n, gates, cells = FWD(*args)
    assert ops.saved_activation_dtype(args[0], _packed(sample), _projected(sample),
                                      torch.float32) == gates.dtype
    cot = _cotangents((output, h_n, c_n), dtype)
    cot[2] = cot[2].float()
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    torch.library.opcheck(BWD, [*cot, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                output, gates, cells, batch_sizes, reverse])


def test_c0_of_another_dtype_than_float32_is_refused():
    """A c0 of another dtype than the input's is taken only in float32 with
    reduced input: a float64 c0 is refused, with float32 input and with
    bfloat16 alike, by the operator's check, which names the argument."""
    args = make_args(SAMPLES[0], torch.float32, requires_grad=False)
    args[2] = args[2].double()
    with pytest.raises(RuntimeError, match="c0 has dtype Double but input has Float"):
        FWD(*args)
    args = make_args(SAMPLES[0], torch.bfloat16, requires_grad=False)
    args[2] = args[2].double()
    with pytest.raises(RuntimeError, match="c0 has dtype Double but input has BFloat16"):
        FWD(*args)
