"""Shared helpers of the CPU parity suite.

A "pair" is an ``nn.LSTM`` (or ``nn.LSTMCell``) and a fusedlstm twin holding
the same weights. ``run_lstm`` runs one module on leaf tensors and returns
everything the suite compares: the outputs, h_n, c_n, and the gradients of
the input, h0, c0 and every parameter under one fixed set of cotangents.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedlstm

LOW_PRECISION = (torch.bfloat16, torch.float16)


# ----------------------------------------------------------------- building


def _make_pair(ref_cls, ours_cls, input_size, hidden_size, dtype, seed, kwargs):
    torch.manual_seed(seed)
    ref = ref_cls(input_size, hidden_size, **kwargs)
    ours = ours_cls(input_size, hidden_size, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref.to(dtype), ours.to(dtype)


def make_lstm_pair(input_size, hidden_size, *, dtype=torch.float32, seed=0, **kwargs):
    """(nn.LSTM, fusedlstm.LSTM) with identical weights, in ``dtype``."""
    return _make_pair(nn.LSTM, fusedlstm.LSTM, input_size, hidden_size, dtype, seed, kwargs)


def make_cell_pair(input_size, hidden_size, *, dtype=torch.float32, seed=0, **kwargs):
    """(nn.LSTMCell, fusedlstm.LSTMCell) with identical weights, in ``dtype``."""
    return _make_pair(nn.LSTMCell, fusedlstm.LSTMCell, input_size, hidden_size, dtype, seed, kwargs)


def state_shapes(module: nn.Module, batch: Optional[int]):
    """Shapes of (h0, c0) for ``module`` at ``batch`` (None: unbatched)."""
    if isinstance(module, nn.LSTMCell):
        h = c = (module.hidden_size,)
        lead = ()
    else:
        layers = module.num_layers * (2 if module.bidirectional else 1)
        h = (module.proj_size or module.hidden_size,)
        c = (module.hidden_size,)
        lead = (layers,)
    mid = () if batch is None else (batch,)
    return lead + mid + h, lead + mid + c


def seeded_randn(*shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    """Standard normal values drawn in float64 from `seed`, then cast: the
    same values (to the dtype's rounding) whatever the dtype."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def seeded_states(module: nn.Module, batch: Optional[int], dtype=torch.float32, seed=1):
    """(h0, c0) of the module's shapes, from seeds `seed` and `seed + 1`."""
    h, c = state_shapes(module, batch)
    return (seeded_randn(*h, dtype=dtype, seed=seed),
            seeded_randn(*c, dtype=dtype, seed=seed + 1))


def to_reference(module: nn.Module) -> nn.Module:
    """A float64 torch.nn copy of ``module`` (same weight values), for bf16."""
    if isinstance(module, nn.LSTMCell):
        ref = nn.LSTMCell(module.input_size, module.hidden_size, bias=module.bias)
    else:
        ref = nn.LSTM(
            module.input_size, module.hidden_size, num_layers=module.num_layers,
            bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
            bidirectional=module.bidirectional, proj_size=module.proj_size,
        )
    ref = ref.double()
    ref.load_state_dict({k: v.double() for k, v in module.state_dict().items()})
    ref.train(module.training)
    return ref


# ------------------------------------------------------------------ running


def run_lstm(
    module: nn.Module,
    x: torch.Tensor,
    hx=None,
    *,
    lengths=None,
    enforce_sorted: bool = True,
    seed: int = 1234,
    backward: bool = True,
    forward_context=contextlib.nullcontext,
):
    """Runs ``module`` and backpropagates fixed random cotangents.

    ``x`` and ``hx`` are cloned into fresh leaves (in ``x``'s own layout, so
    a non-contiguous ``x`` stays non-contiguous). With ``lengths``, ``x`` is
    padded and is packed before the call. Returns a dict: ``output`` (the
    padded output's packed data for packed input), ``h_n``, ``c_n`` and, with
    ``backward``, ``grad_input``, ``grad_h0``, ``grad_c0`` and ``grad_<name>``
    for every parameter. The forward call (only) runs under
    ``forward_context()``, e.g. an autocast region.
    """
    module.zero_grad(set_to_none=True)
    x = _leaf(x)
    hx = None if hx is None else tuple(_leaf(t) for t in hx)
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(
            x, lengths, batch_first=getattr(module, "batch_first", False),
            enforce_sorted=enforce_sorted,
        )
    # A fixed seed right before the call: dropout draws the same masks.
    torch.manual_seed(seed)
    with forward_context():
        out = module(inp) if hx is None else module(inp, hx)
    if isinstance(module, nn.LSTMCell):
        output, (h_n, c_n) = out[0], out
    else:
        output, (h_n, c_n) = out
    if isinstance(output, PackedSequence):
        output = output.data
    result = {"output": output, "h_n": h_n, "c_n": c_n}
    if not backward:
        return {k: v.detach() for k, v in result.items()}
    # Cotangents come from their own generator, so both modules see the same,
    # and are rounded to bf16 so that every dtype (the float64 reference of
    # the bf16 rule included) gets exactly the same values.
    gen = torch.Generator().manual_seed(seed + 1)
    roots = [output, h_n, c_n] if not isinstance(module, nn.LSTMCell) else [h_n, c_n]
    cotangents = [
        torch.randn(r.shape, generator=gen, dtype=torch.float64)
        .to(torch.bfloat16).to(r.dtype)
        for r in roots
    ]
    torch.autograd.backward(roots, cotangents)
    result = {k: v.detach() for k, v in result.items()}
    result["grad_input"] = x.grad
    if hx is not None:
        result["grad_h0"], result["grad_c0"] = hx[0].grad, hx[1].grad
    for name, p in module.named_parameters():
        result[f"grad_{name}"] = p.grad
    return result


def _leaf(t: torch.Tensor) -> torch.Tensor:
    # Keep t's strides (non-contiguous stays so) but own the storage.
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
    out.copy_(t.detach())
    return out.requires_grad_(t.dtype.is_floating_point)


# ---------------------------------------------------------------- comparing


def outcome(fn):
    """(exception, None) if ``fn()`` raises, else (None, its result): for
    comparing what torch.nn and fusedlstm do with the same call."""
    try:
        return None, fn()
    except Exception as e:  # noqa: BLE001 - the exception is what we compare
        return e, None


def assert_same_outcome(ref_call, our_call):
    """Runs both calls: where torch.nn's raises, fusedlstm's must raise the
    same exception type with the same message; else its results must equal
    torch.nn's under torch.testing.assert_close (defaults). Returns torch.nn's
    exception, or None."""
    ref_err, expected = outcome(ref_call)
    our_err, actual = outcome(our_call)
    if ref_err is not None:
        assert (type(our_err), str(our_err)) == (type(ref_err), str(ref_err)), (our_err, ref_err)
    else:
        assert our_err is None, our_err
        torch.testing.assert_close(actual, expected)
    return ref_err


def assert_results_close(actual: dict, expected: dict, **kwargs):
    """Every entry equal under torch.testing.assert_close (defaults)."""
    assert actual.keys() == expected.keys(), (sorted(actual), sorted(expected))
    for key in expected:
        a, e = actual[key], expected[key]
        if e is None:
            assert a is None, f"{key}: expected no gradient, got one"
            continue
        assert a is not None, f"{key}: expected a gradient, got None"
        torch.testing.assert_close(a, e, msg=lambda m, key=key: f"{key}: {m}", **kwargs)


def assert_bitwise(actual, expected, what: str = "tensor"):
    """The two sequences of tensors are equal bit for bit, pairwise (same
    length, dtype, shape and values; a NaN fails, as it did in the loops this
    replaced). A failure names the pair: ``what`` and its index."""
    actual, expected = list(actual), list(expected)
    assert len(actual) == len(expected), (what, len(actual), len(expected))
    for index, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e, rtol=0, atol=0,
                                   msg=lambda m, i=index: f"{what} {i}: {m}")


def max_abs_error(t: Optional[torch.Tensor], ref: Optional[torch.Tensor]) -> float:
    if ref is None or ref.numel() == 0:
        return 0.0
    return (t.double() - ref.double()).abs().max().item()


@contextlib.contextmanager
def saved_activations_rounded_to(dtype: Optional[torch.dtype]):
    """Within: every floating-point tensor that autograd saves for backward
    is rounded to ``dtype`` (and kept in its own dtype); with None, nothing
    is. A float64 model run under it costs its gradients exactly what
    keeping the activations in ``dtype`` costs an otherwise exact
    computation: nn.LSTM's native path and fusedlstm keep them in
    bfloat16/float16 alike (ops.saved_activation_dtype). Forward results are
    untouched. Values already exact in ``dtype`` (the weights, the inputs of
    a low-precision call) are saved unchanged."""
    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point() and t.dtype != dtype:
            return t.to(dtype).to(t.dtype)
        return t

    if dtype is None:
        yield
        return
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def assert_low_precision_parity(ours: dict, torch_low: dict, reference: dict, eps=None, *,
                                grad_floor_ulps: float = 1.0, gradient_unit: str = "tensor",
                                state_unit: str = "tensor",
                                saved_rounded: Optional[dict] = None):
    """The half-precision rule, per compared tensor.

    Our error against the float64 reference (nn.LSTM in float64 on the very
    same weight and input values) must be at most twice nn.LSTM's own error
    at the low precision, plus a floor of one unit of the dtype's precision
    (eps: 2**-7 for bf16, 2**-10 for fp16) relative to the largest reference
    magnitude of that tensor, i.e. one to two ulps at that magnitude.

    Why a floor: every result is rounded to bf16 on the way out, and so is
    every tensor passed between stacked layers and directions (in nn.LSTM
    too), so a correctly computed result can be an ulp off the float64
    reference. Where nn.LSTM happens to land on the nearest value (its error
    near 0, typical for tensors of a few elements), "2x torch's error" alone
    would demand the impossible. The floor is the size of one rounding step,
    far below the errors a wrong computation produces (O(1) relative).
    ``eps`` overrides the unit where results are wider than the precision
    they were computed in (autocast returns float32 from bf16 GEMMs).

    ``grad_floor_ulps`` and ``gradient_unit`` set the floor of the
    gradients (``grad_*``): that many units of eps times the largest
    reference magnitude of the tensor ("tensor"), or of all the reference
    gradients of the call ("backward"). The fuzz sweep, whose thousands of
    tiny examples reach gradient entries that cancel, uses the latter (see
    tests/fuzz_harness.py, low_precision_rule).

    ``state_unit`` does the same for the forward results: "tensor", the
    largest reference magnitude of the tensor itself, or "hidden", the
    larger of that and the largest magnitude of the call's h values
    (``output``, ``h_n``, a cell's ``h``), at which every step's h is rounded
    on its way to the next step, in nn.LSTM as in fusedlstm.

    ``saved_rounded``: the float64 model's results with its saved
    activations rounded to the dtype (``saved_activations_rounded_to``).
    Where given, a gradient may be off by twice that model's error where
    that is larger than nn.LSTM's: the error that keeping the activations
    at the dtype forces on any implementation that keeps them so. nn.LSTM's
    own error is one draw of it, and where a gradient entry cancels (a sum
    of terms much larger than itself) a lucky draw can be far below it.
    """
    assert ours.keys() == reference.keys() == torch_low.keys()
    assert gradient_unit in ("tensor", "backward"), gradient_unit
    assert state_unit in ("tensor", "hidden"), state_unit
    backward_scale = max(
        (r.abs().max().item() for k, r in reference.items()
         if k.startswith("grad_") and r is not None and r.numel()), default=0.0)
    hidden_scale = max(
        (r.abs().max().item() for k, r in reference.items()
         if k in ("output", "h_n", "h") and r is not None and r.numel()), default=0.0)
    failures = []
    for key, ref in reference.items():
        if ref is None:
            assert ours[key] is None and torch_low[key] is None, key
            continue
        assert ours[key].dtype == torch_low[key].dtype, (key, ours[key].dtype)
        assert ours[key].shape == ref.shape, (key, ours[key].shape, ref.shape)
        err_ours = max_abs_error(ours[key], ref)
        err_torch = max_abs_error(torch_low[key], ref)
        # (Non-finite where a saved value is beyond the dtype's range: left out.)
        err_kept = 0.0
        if saved_rounded is not None and key.startswith("grad_"):
            err_kept = max_abs_error(saved_rounded[key], ref)
            err_kept = err_kept if math.isfinite(err_kept) else 0.0
        unit = eps if eps is not None else torch.finfo(ours[key].dtype).eps
        scale = ref.abs().max().item() if ref.numel() else 0.0
        units = 1.0
        if key.startswith("grad_"):
            units = grad_floor_ulps
            scale = backward_scale if gradient_unit == "backward" else scale
        elif state_unit == "hidden":
            scale = max(scale, hidden_scale)
        floor = units * unit * scale
        if not err_ours <= 2 * max(err_torch, err_kept) + floor:
            kept = f" (kept activations {err_kept:.3g})" if err_kept > err_torch else ""
            failures.append(
                f"{key}: ours {err_ours:.3g} > 2 x torch {err_torch:.3g}{kept} + {floor:.3g}"
            )
    assert not failures, "; ".join(failures)


def parity_check(ref_module, our_module, x, hx=None, **run_kwargs):
    """Runs both modules and checks parity at the modules' dtype."""
    dtype = next(our_module.parameters()).dtype
    ours = run_lstm(our_module, x, hx, **run_kwargs)
    theirs = run_lstm(ref_module, x, hx, **run_kwargs)
    if dtype in LOW_PRECISION:
        ref64 = to_reference(our_module)
        x64 = x.double()
        hx64 = None if hx is None else tuple(t.double() for t in hx)
        reference = run_lstm(ref64, x64, hx64, **run_kwargs)
        assert_low_precision_parity(ours, theirs, reference)
    else:
        assert_results_close(ours, theirs)
    return ours, theirs


def assert_backward_unchanged_by_autocast(device: str, dtype: torch.dtype,
                                          autocast_dtype: torch.dtype, **kwargs):
    """A backward called under autocast (the autograd engine runs it in the
    caller's autocast state) gives the bits of one called outside: autocast
    acts on the modules' forward, never on the ATen calls inside the layer
    operators."""
    import fusedlstm

    torch.manual_seed(0)
    module = fusedlstm.LSTM(5, 8, **kwargs).to(device, dtype)
    x = torch.randn(7, 3, 5, device=device, dtype=dtype, requires_grad=True)
    out, (h, c) = module(x)
    loss = out.float().square().sum() + h.float().sum() + c.float().sum()
    params = [x, *module.parameters()]
    outside = torch.autograd.grad(loss, params, retain_graph=True)
    with torch.autocast(device, dtype=autocast_dtype):
        inside = torch.autograd.grad(loss, params, retain_graph=True)
    assert_bitwise(inside, outside, "gradient")
