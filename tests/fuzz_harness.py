"""The machinery of the fuzz tests (tests/test_fuzz.py): inputs described as
data, run through both modules, and the outcomes compared.

An input is a ``Call``: a list of ``TensorSpec`` (shape, dtype, memory
layout, values from a seed) and how they are assembled into the module's
arguments (padded, unbatched or packed input; hx given, omitted or
malformed). ``Call.materialise`` builds fresh leaves every time, so the
torch.nn module, fusedlstm and the float64 reference see the same values,
each through its own autograd graph.

``compare_outcomes`` holds the rule of the sweep: both modules return and
everything they return (outputs, states, their ``requires_grad``, gradients
of every input and parameter) matches, or both raise the same exception type
with the same message. Two documented exceptions to "the same message", and
one to "both raise", are spelled out at ``BACKEND_MESSAGES`` and
``KNOWN_DIVERGENCES``.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from fusedlstm import ops
from helpers import (LOW_PRECISION, assert_low_precision_parity, saved_activations_rounded_to,
                     to_reference)

LAYOUTS = ("contiguous", "transposed", "strided", "expanded", "offset")


# ------------------------------------------------------------------ tensors


@dataclass
class TensorSpec:
    """One tensor argument: its values come from ``seed``; ``layout`` picks
    how it sits in memory (the leaf that owns the values may have another
    shape; the module sees a view of it with ``shape``)."""

    shape: tuple
    dtype: torch.dtype
    layout: str = "contiguous"
    expand_dim: int = 0
    requires_grad: bool = True
    seed: int = 0
    device: str = "cpu"  # another than Call.device: a device mismatch

    def base_shape(self) -> tuple:
        shape, n = tuple(self.shape), len(self.shape)
        if self.layout == "transposed" and n >= 2:
            return shape[::-1]
        if self.layout == "strided" and n >= 1:
            return shape[:-1] + (2 * shape[-1],)
        if self.layout == "expanded" and n >= 1:
            d = self.expand_dim % n
            return shape[:d] + (1,) + shape[d + 1:]
        if self.layout == "offset":
            return (_numel(shape) + 3,)
        return shape

    def view(self, base: torch.Tensor) -> torch.Tensor:
        n = len(self.shape)
        if self.layout == "transposed" and n >= 2:
            return base.permute(*range(n - 1, -1, -1))
        if self.layout == "strided" and n >= 1:
            return base[..., ::2]
        if self.layout == "expanded" and n >= 1:
            return base.expand(self.shape)
        if self.layout == "offset":
            return base[3:].view(self.shape)
        return base

    def leaf(self, as_double: bool) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        shape = self.base_shape()
        if self.dtype.is_floating_point:
            # Drawn in float64 and rounded to the dtype: the float64
            # reference then starts from exactly the values the low-precision
            # modules see.
            t = torch.randn(shape, generator=gen, dtype=torch.float64).to(self.dtype)
            if as_double:
                t = t.double()
        else:
            t = torch.randint(-2, 3, shape, generator=gen).to(self.dtype)
        t = t.to(self.device)
        return t.requires_grad_(self.requires_grad and t.dtype.is_floating_point)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# -------------------------------------------------------------------- calls


@dataclass
class Call:
    """The arguments of one module call.

    kind: "padded" (3-D), "unbatched" (2-D), "packed", "cell" (LSTMCell,
    1-D or 2-D input), or "raw" (the input spec passed as it is, any rank).
    hx: "none", "tuple", "list", "single" (h alone, not in a tuple), "one"
    (a 1-tuple), "three" (a 3-tuple), "nones" ((None, None)).
    """

    kind: str
    x: TensorSpec
    h: Optional[TensorSpec] = None
    c: Optional[TensorSpec] = None
    hx: str = "none"
    lengths: Optional[list] = None
    batch_first: bool = False
    enforce_sorted: bool = True
    packed_data_layout: str = "contiguous"  # "transposed": a strided PackedSequence.data
    device: str = "cpu"  # the modules'; a spec elsewhere is a device mistake

    def materialise(self, as_double: bool = False):
        """Returns (args, leaves): the module's positional arguments and the
        leaf tensors that own their values, by name."""
        leaves = {"x": self.x.leaf(as_double)}
        inp: Any = self.x.view(leaves["x"])
        if self.kind == "packed":
            inp = pack_padded_sequence(
                inp, torch.tensor(self.lengths), batch_first=self.batch_first,
                enforce_sorted=self.enforce_sorted,
            )
            if self.packed_data_layout == "transposed":
                data = inp.data.t().contiguous().t()
                inp = PackedSequence(data, inp.batch_sizes, inp.sorted_indices,
                                     inp.unsorted_indices)
        if self.hx == "none":
            return (inp,), leaves
        states = []
        for name, spec in (("h0", self.h), ("c0", self.c)):
            leaves[name] = spec.leaf(as_double)
            states.append(spec.view(leaves[name]))
        hx = {
            "tuple": lambda: tuple(states),
            "list": lambda: list(states),
            "single": lambda: states[0],
            "one": lambda: (states[0],),
            "three": lambda: (states[0], states[1], states[1]),
            "nones": lambda: (None, None),
        }[self.hx]()
        return (inp, hx), leaves

    def specs(self):
        return [s for s in (self.x, self.h, self.c) if s is not None]

    def moved_to(self, device: str) -> "Call":
        """The same call with the tensors on this call's device on
        ``device`` instead (a device mistake stays one)."""
        def move(spec):
            if spec is None or spec.device != self.device:
                return spec
            return TensorSpec(**{**vars(spec), "device": device})
        return Call(**{**vars(self), "x": move(self.x), "h": move(self.h), "c": move(self.c),
                       "device": device})


# ------------------------------------------------------------------ running


@dataclass
class Outcome:
    error: Optional[BaseException] = None
    stage: str = ""                      # "forward" or "backward" for an error
    results: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # exact-match parts: structure, indices


MODES = {
    "grad": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def run(module: nn.Module, call: Call, *, mode: str = "grad", seed: int = 0,
        as_double: bool = False, saved_in: Optional[torch.dtype] = None) -> Outcome:
    """Calls ``module`` on ``call``; in grad mode, also the gradients of
    every leaf and parameter under fixed random cotangents. ``saved_in``:
    the activations saved for backward are rounded to that dtype
    (helpers.saved_activations_rounded_to)."""
    args, leaves = call.materialise(as_double)
    # Dropout draws from the global generator: the same seed, the same masks.
    torch.manual_seed(seed)
    try:
        with MODES[mode](), saved_activations_rounded_to(saved_in):
            out = module(*args)
    except Exception as e:  # noqa: BLE001 - the exception is what we compare
        return Outcome(error=e, stage="forward")
    if isinstance(module, nn.LSTMCell):
        roots = {"h": out[0], "c": out[1]}
        extras = {"structure": _structure(out)}
    else:
        output, (h_n, c_n) = out
        extras = {"structure": _structure(out)}
        if isinstance(output, PackedSequence):
            for name in ("batch_sizes", "sorted_indices", "unsorted_indices"):
                extras[name] = getattr(output, name)
            output = output.data
        roots = {"output": output, "h_n": h_n, "c_n": c_n}
    extras["requires_grad"] = {k: v.requires_grad for k, v in roots.items()}
    results = {k: v.detach() for k, v in roots.items()}
    if mode != "grad":
        return Outcome(results=results, extras=extras)
    wrt = dict(leaves)
    wrt.update(dict(module.named_parameters()))
    wrt = {k: v for k, v in wrt.items() if v.requires_grad}
    live = {k: v for k, v in roots.items() if v.requires_grad}
    for name in wrt:
        results[f"grad_{name}"] = None
    if live and wrt:
        gen = torch.Generator().manual_seed(seed + 1)
        # Rounded to bf16 so every dtype, float64 included, gets the same;
        # drawn on the CPU, so every device gets the same too. (Meta results
        # keep CPU cotangents: torch.nn's backward on them is part of what
        # a device mistake is compared on.)
        cotangents = [
            torch.randn(r.shape, generator=gen, dtype=torch.float64)
            .to(torch.bfloat16).to(r.dtype).to(r.device if r.is_cuda else "cpu")
            for r in live.values()
        ]
        try:
            grads = torch.autograd.grad(
                list(live.values()), list(wrt.values()), cotangents, allow_unused=True
            )
        except Exception as e:  # noqa: BLE001
            return Outcome(error=e, stage="backward")
        for name, g in zip(wrt, grads):
            results[f"grad_{name}"] = g
    return Outcome(results=results, extras=extras)


def _structure(out) -> str:
    """The nesting of container types, e.g. "tuple(PackedSequence, tuple(Tensor, Tensor))"."""
    if isinstance(out, PackedSequence):
        return "PackedSequence"
    if isinstance(out, (tuple, list)):
        return f"{type(out).__name__}({', '.join(_structure(o) for o in out)})"
    return type(out).__name__


# ---------------------------------------------------------------- comparing

# Mistakes nn.LSTM does not check itself, whose message comes from whichever
# backend kernel happens to run into them (oneDNN or ATen's native path,
# chosen per call): there is no single message to match. For calls that
# contain such a mistake (``Call`` marked ``backend_message`` by the
# generator), torch's message must be one of these, the exception type must
# be the same, and fusedlstm's message must name the problem. Any other
# message, even in such a call, must match exactly. tests/test_errors.py
# pins the individual cases.
BACKEND_MESSAGES = re.compile("|".join([
    r"get_mkldnn_dtype: unsupported data type",
    r"could not create a primitive descriptor",
    r"could not execute a primitive",
    r"mat1 and mat2 must have the same dtype",
    r"expected m1 and m2 to have the same dtype",
    r"mat1 and mat2 shapes cannot be multiplied",
    r"got an incorrect number of RNN parameters",
    r"Expected more (weights|hidden states) in stacked_rnn",
    r"Odd number of params or hiddens given to a bidirectional RNN",
    r"The size of tensor a \(\d+\) must match the size of tensor b",
    # (the meta device's in-place add writes the shape as torch.Size([...]))
    r"output with shape (?:torch\.Size\()?\[.*\]\)? doesn't match the broadcast shape",
    r"Attempting to broadcast a dimension of length \d+ at -?\d+!",
    r"start \(\d+\) \+ length \(\d+\) exceeds dimension size",
    # A tensor on another device, in packed input or a cell, where torch has
    # no device check of its own (tests/test_devices.py).
    r"Tensor on device \w+ is not on the expected device \w+!",
    # On the meta device torch's decompositions meet other mistakes first:
    # integer input autograd's dtype check, a shape the matmul's check, an
    # integer state the in-place add's promotion check, integer input to a
    # cell without bias the matmul's out-dtype check.
    r"Autograd not support dtype: \w+",
    r"a and b must have same reduction dim",
    r"Promotion of int\.add/sub_\(float\) in in-place ops are not possible",
    r"Attempting to cast from [\w.]+ to out tensor with dtype [\w.]+, but this can't be "
    r"cast because it is not safe!",
]))
# On CUDA, torch.nn's calls reach other backends: cuDNN's checks (ATen's
# cudnn/RNN.cpp: check_attributes with dtypes, the state sizes, cuDNN's own
# status), the dispatcher's device check, cuBLAS's matmul and the fused cell
# kernel (_thnn_fused_lstm_cell). Written from PyTorch's source: no GPU run
# has seen them yet, so a CUDA sweep that meets another message fails and
# names it.
CUDA_BACKEND_MESSAGES = re.compile("|".join([
    r"Input and (hidden|parameter) tensors are not the same dtype, found input tensor "
    r"with \w+ and (hidden|parameter) tensor with \w+",
    r"Expected (hidden|cell|input|output) size \[.*\], got \[.*\]",
    r"cuDNN error: CUDNN_STATUS_\w+",
    r"Expected all tensors to be on the same device",
    r"expected (mat1|m1) and (mat2|m2) to have the same dtype",
    r"expected scalar type \w+ but found \w+",
    r"Expected tensor for argument #\d+ '\w+' to have the same (type|dtype|device|size)",
]))
OUR_BACKEND_MESSAGES = re.compile(
    r"expected scalar type \w+ but found \w+"
    r"|(must|to) have the same dtype"
    r"|has dtype \w+ but input has \w+"
    r"|input must be a floating-point tensor, got \w+"
    r"|Expected hidden\[\d\] size \(.*\), got \[.*\]"
    r"|input\.size\(-1\) must be equal to input_size"
    r"|\w+ is on \w+ but input is on \w+"
    # LSTMCell's step with a c of another dtype runs torch's own ops.
    r"|Tensor on device \w+ is not on the expected device \w+!"
)


def packed_c0_of_one_row(call: Call) -> bool:
    """Packed input of several sequences, h0 well-formed, c0 with one row."""
    if call.kind != "packed" or call.hx not in ("tuple", "list", "three"):
        return False
    B = len(call.lengths)
    return (B > 1 and len(call.h.shape) == 3 and call.h.shape[1] == B
            and len(call.c.shape) == 3 and call.c.shape[1] == 1)


def device_mismatch(call: Call) -> bool:
    """Some of the call's tensors on another device than the modules'."""
    return any(s.device != call.device for s in call.specs())


# Where torch.nn accepts a call that fusedlstm refuses, on purpose. Each:
# (when it applies, what fusedlstm must raise: a RuntimeError with a message
# matching the pattern, whether it also covers a call that torch.nn refuses
# in forward with another message).
# * packed_c0_broadcast: nn.LSTM checks no state shape for packed input, and
#   ATen's native cell broadcasts a c0 of one row over all the sequences
#   (f * c0); fusedlstm raises nn.LSTM's message for the same mistake with
#   padded input.
# * device_mismatch_accepted: torch's meta kernels take a one-element CPU
#   tensor as a scalar and multiply empty tensors without looking at their
#   devices, so with packed input or a cell torch.nn can take a call that
#   mixes the CPU and meta: it returns meta tensors (no values), or fails
#   only in backward. fusedlstm refuses every such call in forward, naming
#   the tensor, or the call's other mistake (a dtype, a size) where it
#   has one.
KNOWN_DIVERGENCES = {
    "packed_c0_broadcast": (packed_c0_of_one_row,
                            r"Expected hidden\[1\] size \(.*\), got \[.*\]", True),
    # Where torch.nn refuses in forward, the messages are compared as usual.
    "device_mismatch_accepted": (device_mismatch,
                                 f".*(?:{OUR_BACKEND_MESSAGES.pattern}).*", False),
}


# The low-precision rule (helpers.assert_low_precision_parity) for the sweep:
# 2x nn.LSTM's own error (for gradients, or 2x what keeping the activations
# in the dtype nn.LSTM keeps costs the float64 model, where that is more:
# check_call's saved_rounded) plus a floor, which for gradients is counted in
# units of eps times the largest magnitude among all the call's reference
# gradients, one unit per rounding on a gradient's way: the activations
# saved for backward (kept in bfloat16/float16 by nn.LSTM and fusedlstm
# alike), the gradient handed down each of the num_layers - 1 boundaries
# between stacked layers (a bfloat16/float16 tensor in both), and the
# result: num_layers + 1 units.
#
# Why the call's gradient scale: every gradient is built from the same gate
# gradients (the input's, the states', the weights' and the biases' alike),
# and that scale, not the gradient's own size, sets the size of its rounding
# errors. A gradient entry can be much smaller than the terms it sums (they
# cancel: tiny tensors, which hypothesis favours, often have such an entry
# as their largest), and then the error relative to the tensor's own size
# has no bound, for either implementation. In two samples of 12,000 random
# examples (bfloat16 and float16, about 35,000 gradient tensors each): with
# the tensor's own size as the unit, fusedlstm exceeded 2x nn.LSTM's error
# + 1 unit on 0.1% of the tensors, by up to 9 units (nn.LSTM's own errors
# reached 18 units); with the call's gradient scale, once, by 1.06 units
# (a later run of 20,000 examples per test met one excess of 3.3 units,
# in three stacked layers, whose floor is 4). fusedlstm's errors are the
# smaller on average; test_fuzz.py checks that on a fixed sample
# (test_low_precision_errors_no_larger_than_nn_lstm_on_average).
#
# Why the kept activations' term: that scale covers cancellation in the
# gradients returned, not inside the backward. Where the gradient reaching
# c_t (grad_c + grad_h * o * (1 - tanh(c_t)^2)) is much smaller than its
# terms, the rounding of the kept o is magnified by as much, in both
# implementations, and nn.LSTM's error is one draw of that effect: it can
# be lucky. A 10,000-example run met a bfloat16 cell whose gradient was 5.3
# units off, as much as the float64 model with bfloat16 activations, while
# nn.LSTMCell's was 0.7 (test_fuzz.py::
# test_gradient_that_cancels_is_judged_by_what_kept_activations_cost).
#
# Why the forward results' floor is at the scale of h: each step's h is
# rounded to the dtype before the next step's product (nn.LSTM's bfloat16
# and float16 paths return every h_t in the dtype and run on from it;
# fusedlstm's bfloat16 dot products round it as oneDNN does), so its
# error enters the next states at the scale of h. A state that cancels
# (c_t = f c_{t-1} + i g much smaller than its terms) keeps that absolute
# error, and relative to its own size it has no bound. A 15,000-example
# run met a bfloat16 call of one unit (H = 1) whose c_n cancelled to 0.0032
# beside outputs of 0.31: fusedlstm's c_n was 0.00012 off, what the float64
# model with h rounded to bfloat16 gives, while nn.LSTM, which rounds c
# too, landed 2e-5 off by luck (test_fuzz.py::
# test_state_that_cancels_is_judged_at_the_scale_of_h). The output is
# judged at that scale already, being all the h_t.
def low_precision_rule(module) -> dict:
    """Keyword arguments of assert_low_precision_parity for ``module``."""
    return dict(grad_floor_ulps=1.0 + getattr(module, "num_layers", 1),
                gradient_unit="backward", state_unit="hidden")


def _known_divergence(call: Call, error: BaseException, torch_refused_forward: bool) -> str:
    for name, (applies, message, also_refused) in KNOWN_DIVERGENCES.items():
        if torch_refused_forward and not also_refused:
            continue
        if applies(call) and isinstance(error, RuntimeError) and \
                re.fullmatch(message, str(error)):
            return f"known divergence: {name}"
    return ""


def compare_outcomes(ours: Outcome, theirs: Outcome, call: Call, *,
                     backend_message: bool = False,
                     reference: Optional[Outcome] = None,
                     low_precision_rule: Optional[dict] = None) -> str:
    """Asserts the sweep's rule; returns a label of what happened."""
    if theirs.error is not None:
        assert ours.error is not None, (
            f"torch.nn raised {type(theirs.error).__name__} in {theirs.stage}: "
            f"{theirs.error}; fusedlstm did not"
        )
        if ours.stage != theirs.stage:
            divergence = _known_divergence(call, ours.error, theirs.stage == "forward")
            assert divergence and ours.stage == "forward", (
                ours.stage, theirs.stage, ours.error, theirs.error)
            return divergence
        assert type(ours.error) is type(theirs.error), (
            f"fusedlstm raised {type(ours.error).__name__}: {ours.error}; "
            f"torch.nn raised {type(theirs.error).__name__}: {theirs.error}"
        )
        if str(ours.error) == str(theirs.error):
            return f"same error: {type(theirs.error).__name__}"
        divergence = _known_divergence(call, ours.error, theirs.stage == "forward")
        if divergence:
            return divergence
        assert backend_message and (
            BACKEND_MESSAGES.search(str(theirs.error))
            or (call.device != "cpu" and CUDA_BACKEND_MESSAGES.search(str(theirs.error)))), (
            f"messages differ:\n  fusedlstm: {ours.error}\n  torch.nn:  {theirs.error}"
        )
        assert OUR_BACKEND_MESSAGES.search(str(ours.error)), (
            f"fusedlstm's message does not name the problem: {ours.error} "
            f"(torch.nn: {theirs.error})"
        )
        return f"same error type, backend message: {type(theirs.error).__name__}"
    if ours.error is not None:
        divergence = _known_divergence(call, ours.error, False)
        if divergence:
            return divergence
        raise AssertionError(
            f"fusedlstm raised {type(ours.error).__name__} in {ours.stage}: "
            f"{ours.error}; torch.nn returned"
        )
    assert ours.extras.keys() == theirs.extras.keys()
    for key, value in theirs.extras.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(ours.extras[key], value), (key, ours.extras[key], value)
        else:
            assert ours.extras[key] == value, (key, ours.extras[key], value)
    assert ours.results.keys() == theirs.results.keys(), (
        sorted(ours.results), sorted(theirs.results))
    if low_precision_rule is not None:
        assert reference is not None and reference.error is None, reference
        assert_low_precision_parity(ours.results, theirs.results, reference.results,
                                    **low_precision_rule)
        return "same results (low-precision rule)"
    for key, expected in theirs.results.items():
        actual = ours.results[key]
        if expected is None or actual is None:
            assert actual is None and expected is None, (
                f"{key}: gradient present in one only (ours {actual is not None})")
            continue
        torch.testing.assert_close(actual, expected, msg=lambda m, key=key: f"{key}: {m}")
    return "same results"


def _c_cast_into(call: Call, dtype: torch.dtype) -> bool:
    """A layer's c0 of a narrower dtype (or an integer one), which both
    modules compute as cast into ``dtype`` (fusedlstm/_state_dtypes.py): the
    call is then judged like one in ``dtype``. (LSTMCell's promoted step is
    torch's own composite on both sides, compared value by value.)"""
    return (call.kind != "cell" and call.c is not None
            and torch.promote_types(dtype, call.c.dtype) == dtype)


def _float32_c_kept(call: Call, dtype: torch.dtype) -> bool:
    """A layer's float32 c0 with bfloat16/float16 input, which both modules
    (on oneDNN's calls, the only ones that return) carry in float32: the
    call is judged like one in ``dtype`` against the float64 model."""
    return (call.kind != "cell" and call.c is not None and dtype in LOW_PRECISION
            and call.c.dtype == torch.float32)


def _kept_by_torch(module: nn.Module, call: Call) -> torch.dtype:
    """The dtype of the activations torch.nn keeps for the backward of a
    low-precision call: the input's for LSTMCell (torch's composite step),
    and for nn.LSTM whatever its kernel for the call keeps (float32 where
    it runs oneDNN: ops.saved_activation_dtype, which tests/
    test_reduced_precision.py checks against nn.LSTM)."""
    if isinstance(module, nn.LSTMCell):
        return call.x.dtype
    return ops.saved_activation_dtype(
        torch.empty(0, dtype=call.x.dtype, device=call.device), call.kind == "packed",
        module.proj_size > 0,
        None if call.c is None else call.c.dtype)


def _on(device: str, outcome: Outcome) -> Outcome:
    """``outcome`` with its results on ``device``."""
    outcome.results = {k: None if v is None else v.to(device)
                       for k, v in outcome.results.items()}
    return outcome


def check_call(pair, call: Call, *, mode: str = "grad", seed: int = 0,
               backend_message: bool = False) -> str:
    """Runs ``call`` through both modules of ``pair`` (torch.nn first) and
    compares. Low-precision results are judged against a float64 torch.nn
    copy (the helpers' 2x rule), on the CPU whatever the call's device:
    ATen's native loop there saves every activation as a tensor, which
    ``saved_in`` can round (cuDNN keeps them in an opaque reserve)."""
    ref, ours = pair
    theirs = run(ref, call, mode=mode, seed=seed)
    mine = run(ours, call, mode=mode, seed=seed)
    dtype = next(iter(ours.parameters()), torch.empty(0)).dtype
    low = (theirs.error is None and mine.error is None
           and (dtype in LOW_PRECISION or call.x.dtype in LOW_PRECISION))
    reference = None
    if low:
        if not (dtype == call.x.dtype
                and all(s.dtype == dtype or (s is call.c and (_c_cast_into(call, dtype)
                                                              or _float32_c_kept(call, dtype)))
                        for s in call.specs())):
            # torch.nn and fusedlstm both took a mixed-dtype call: compare at
            # the dtype they returned, value by value (exact structure first).
            low = False
        else:
            # One float64 copy serves both runs: run() takes gradients with
            # autograd.grad, so the first leaves nothing in the copy's .grad.
            double, on_cpu = to_reference(ours), call.moved_to("cpu")
            reference = _on(call.device, run(double, on_cpu, mode=mode, seed=seed,
                                             as_double=True))
    rule = None
    if low:
        rule = low_precision_rule(ours)
        if mode == "grad":
            rule["saved_rounded"] = _on(call.device, run(
                double, on_cpu, mode=mode, seed=seed, as_double=True,
                saved_in=_kept_by_torch(ref, call))).results
    return compare_outcomes(mine, theirs, call, backend_message=backend_message,
                            reference=reference, low_precision_rule=rule)
