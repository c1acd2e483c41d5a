"""The fusedlstm operators: loading, fake (meta) kernels and autograd.

The operators are declared in C++ (csrc/ops.cpp) and implemented per device
in csrc/cpu and csrc/cuda. This module adds what PyTorch needs around them:
fake kernels for tracing (torch.compile, export) and the autograd formulas.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd import forward_ad

from ._build_check import check_build

check_build()  # before _C: a library built for another torch must not load
from . import _C  # noqa: E402,F401  (loads the library, registering the operators)
from . import _flop_formulas  # noqa: F401  (torch.utils.flop_counter's counts)
from . import reference
from ._dtype_names import aten_name

_forward_op = torch.ops.fusedlstm.lstm_layer_forward
_inference_op = torch.ops.fusedlstm.lstm_layer_inference
_backward_op = torch.ops.fusedlstm.lstm_layer_backward
_bidirectional_inference_op = torch.ops.fusedlstm.lstm_bidirectional_inference
_bidirectional_forward_op = torch.ops.fusedlstm.lstm_bidirectional_forward


def lstm_layer(
    input: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
    w_hr: Optional[Tensor] = None,
    batch_sizes: Optional[Tensor] = None,
    reverse: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer in one direction; returns (output, h_n, c_n).

    input is [T, B, I], or packed [N, I] with ``batch_sizes`` as in
    ``PackedSequence``; h0 is [B, P], c0 is [B, H], the weights are shaped as
    in ``nn.LSTM``. Differentiable to any order.

    Where no gradient can flow (grad mode off, or no argument requires grad),
    the inference operator runs instead: the same numbers, with nothing kept
    for backward.
    """
    args = (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
    if input.is_complex():
        if input.device.type == "cuda":
            # nn.LSTM and nn.LSTMCell run complex CUDA input through ATen's
            # fused CUDA cell (cuDNN takes no complex), which has no complex
            # kernel: refused there, so refused here, with its error.
            raise NotImplementedError(
                f'"_thnn_fused_lstm_cell_cuda" not implemented for '
                f"'{aten_name(input.dtype)}'")
        return reference.lstm_layer(*args)
    if _functorch_active() or _dual_tensors_present(args[:8]):
        output, h_n, c_n, _, _ = _FunctorchLayer.apply(*args)
        return output, h_n, c_n
    if not _needs_grad(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        return _inference_op(*args)
    output, h_n, c_n, _, _ = _forward_op(*args)
    return output, h_n, c_n


def bidirectional_applies(input: Tensor, *tensors: Optional[Tensor]) -> bool:
    """Whether ``lstm_bidirectional`` may run both directions of a layer in
    place of two ``lstm_layer`` calls, with the same formulas: real CPU
    input, no complex dtype, and no torch.func transform or dual tensor
    (``tensors``: both directions' states and weights), which
    ``lstm_layer`` runs through its own Functions."""
    return (input.device.type == "cpu" and not input.is_complex()
            and not _functorch_active() and not _dual_tensors_present((input, *tensors)))


def lstm_bidirectional(input: Tensor, forward: tuple, reverse: tuple,
                       batch_sizes: Optional[Tensor] = None):
    """``lstm_layer`` of both directions of a layer, in one call
    (``bidirectional_applies``); ``forward`` and ``reverse`` are each (h0,
    c0, w_ih, w_hh, b_ih, b_hh, w_hr). Returns ((output, h_n, c_n) of the
    forward direction, the same of the reverse one), differentiable to any
    order. On the CPU with two intra-op threads the two run at once, one
    thread each, forward and backward, and give the bits of two
    ``lstm_layer`` calls on one thread (``FUSEDLSTM_CPU_DIRECTIONS``; README,
    API); elsewhere they run in turn, as two calls. Where no gradient can
    flow, the inference operator runs, keeping nothing for backward."""
    args = (input, *forward, *reverse, batch_sizes)
    if not _needs_grad(*args[:15]):
        o, h, c, o_r, h_r, c_r = _bidirectional_inference_op(*args)
    else:
        o, h, c, _, _, o_r, h_r, c_r, _, _ = _bidirectional_forward_op(*args)
    return (o, h, c), (o_r, h_r, c_r)


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    # torch.jit.trace checks a trace by tracing again under no_grad; the
    # operator recorded must not depend on the grad mode, or the two graphs
    # differ. A trace taken with parameters that require grad records the
    # training operator, which also serves inference.
    if not torch.is_grad_enabled() and not torch.jit.is_tracing():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


# ---------------------------------------------------------------- fake kernels


def _with_width(like: Tensor, width) -> Tensor:
    return like.new_empty((*like.shape[:-1], width))


def _onednn_bf16_supported() -> bool:
    op = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(op()) if op is not None else False


# Read once: a property of the CPU, and the rule below must not change within
# a process (graphs traced with the fake kernel rely on it).
_ONEDNN_BF16 = _onednn_bf16_supported()


def saved_activation_dtype(input: Tensor, packed: bool, has_proj: bool,
                           c0_dtype: Optional[torch.dtype] = None) -> torch.dtype:
    """The dtype of the gates and cells that lstm_layer_forward keeps for
    backward: what nn.LSTM's own kernel for the call keeps. float32 for
    bfloat16 on the CPU where nn.LSTM runs oneDNN (padded input, no
    projection, a CPU with oneDNN bfloat16 support), and for bfloat16 with
    a float32 c0 on the CPU (which nn.LSTM takes only on oneDNN): oneDNN's
    float activations set the accuracy bar there. Else the input's dtype.
    c0_dtype defaults to the input's. Mirrors saved_activation_dtype in
    csrc/common/layer_args.h."""
    if input.device.type == "cpu" and input.dtype == torch.bfloat16:
        if not packed and not has_proj and _ONEDNN_BF16:
            return torch.float32
        if c0_dtype == torch.float32:
            return torch.float32
    return input.dtype


def _check_devices(op: str, input: Tensor, batch_sizes: Optional[Tensor], **tensors) -> None:
    """The device checks of the C++ kernels (check_layer_args), for the fake
    kernels. Besides tracing, the fake kernel is the Meta kernel: a call that
    mixes meta tensors with real ones dispatches to it, and without these
    checks it returned uninitialised memory where the kernels raise."""
    for name, t in tensors.items():
        if t is not None and t.device != input.device:
            raise RuntimeError(f"{op}: {name} is on {t.device} but input is on {input.device}")
    if batch_sizes is not None and batch_sizes.device.type != "cpu":
        raise RuntimeError("fusedlstm: batch_sizes must be a 1-D int64 CPU tensor")


@torch.library.register_fake("fusedlstm::lstm_layer_forward")
def _forward_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse):
    _check_devices("lstm_layer_forward", input, batch_sizes, w_ih=w_ih, w_hh=w_hh,
                   h0=h0, c0=c0, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr)
    hidden = w_ih.shape[0] // 4
    saved = saved_activation_dtype(input, batch_sizes is not None, w_hr is not None, c0.dtype)
    return (
        _with_width(input, h0.shape[-1]),
        torch.empty_like(h0, memory_format=torch.contiguous_format),
        torch.empty_like(c0, memory_format=torch.contiguous_format),
        _with_width(input, 4 * hidden).to(saved),
        _with_width(input, hidden).to(saved),
    )


@torch.library.register_fake("fusedlstm::lstm_layer_inference")
def _inference_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse):
    _check_devices("lstm_layer_inference", input, batch_sizes, w_ih=w_ih, w_hh=w_hh,
                   h0=h0, c0=c0, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr)
    return (
        _with_width(input, h0.shape[-1]),
        torch.empty_like(h0, memory_format=torch.contiguous_format),
        torch.empty_like(c0, memory_format=torch.contiguous_format),
    )


@torch.library.register_fake("fusedlstm::lstm_bidirectional_inference")
def _bidirectional_inference_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                  h0_r, c0_r, w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r,
                                  batch_sizes):
    forward = _inference_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, False)
    reverse = _inference_fake(input, h0_r, c0_r, w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r,
                              batch_sizes, True)
    return (*forward, *reverse)


@torch.library.register_fake("fusedlstm::lstm_bidirectional_forward")
def _bidirectional_forward_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                h0_r, c0_r, w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r,
                                batch_sizes):
    forward = _forward_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, False)
    reverse = _forward_fake(input, h0_r, c0_r, w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r,
                            batch_sizes, True)
    return (*forward, *reverse)


_ALL_GRADIENTS = (True,) * 7


@torch.library.register_fake("fusedlstm::lstm_layer_backward")
def _backward_fake(
    grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
    output, gates, cells, batch_sizes, reverse, output_mask=_ALL_GRADIENTS,
):
    _check_devices("lstm_layer_backward", input, batch_sizes, w_ih=w_ih, w_hh=w_hh,
                   h0=h0, c0=c0, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr, output=output,
                   gates=gates, cells=cells, grad_output=grad_output,
                   grad_h_n=grad_h_n, grad_c_n=grad_c_n)

    def like(t, wanted):
        # A gradient the mask leaves out (or of an absent tensor) is empty,
        # in the dtype it would have had.
        if t is None or not wanted:
            return (input if t is None else t).new_empty(0)
        return torch.empty_like(t, memory_format=torch.contiguous_format)

    return tuple(like(t, wanted) for t, wanted in zip(
        (input, h0, c0, w_ih, w_hh, b_ih, w_hr), output_mask))


@torch.library.register_fake("fusedlstm::lstm_bidirectional_backward")
def _bidirectional_backward_fake(
    grad_output, grad_h_n, grad_c_n, grad_output_r, grad_h_n_r, grad_c_n_r, input,
    h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, output, gates, cells,
    h0_r, c0_r, w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r, output_r, gates_r, cells_r,
    batch_sizes, output_mask=_ALL_GRADIENTS, output_mask_reverse=_ALL_GRADIENTS,
):
    forward = _backward_fake(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh,
                             b_ih, b_hh, w_hr, output, gates, cells, batch_sizes, False,
                             output_mask)
    reverse = _backward_fake(grad_output_r, grad_h_n_r, grad_c_n_r, input, h0_r, c0_r,
                             w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r, output_r, gates_r,
                             cells_r, batch_sizes, True, output_mask_reverse)
    return (*forward, *reverse)


# -------------------------------------------------------- first-order autograd
#
# lstm_layer_forward's and lstm_layer_inference's Autograd kernels are C++
# (csrc/autograd.cpp): a Python one cost tens of microseconds of every small
# call (NOTES changes 24 and 26). The forward's formulas below are the same
# ones again, for the torch.func Function further down (_FunctorchLayer),
# whose backward is _FunctorchLayerBackward (differentiable under transforms).


def _forward_setup_context(ctx, inputs, output):
    input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = inputs
    out, _, _, gates, cells = output
    ctx.reverse = reverse
    ctx.save_for_backward(
        input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out, gates, cells, batch_sizes
    )
    ctx.mark_non_differentiable(gates, cells)
    # As in csrc/autograd.cpp: no zero gradients for gates and cells.
    ctx.set_materialize_grads(False)


def _forward_backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_gates, _grad_cells):
    (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out, gates, cells,
     batch_sizes) = ctx.saved_tensors
    # An output that received no gradient contributes zero.
    if grad_output is None:
        grad_output = torch.zeros_like(out)
    if grad_h_n is None:
        grad_h_n = torch.zeros_like(h0)
    if grad_c_n is None:
        grad_c_n = torch.zeros_like(c0)
    g_input, g_h0, g_c0, g_w_ih, g_w_hh, g_bias, g_w_hr = _FunctorchLayerBackward.apply(
        grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih,
        b_hh, w_hr, out, gates, cells, batch_sizes, ctx.reverse)
    has_bias = b_ih is not None
    return (
        g_input, g_h0, g_c0, g_w_ih, g_w_hh,
        g_bias if has_bias else None,
        # b_ih and b_hh get equal gradients; give each its own tensor so that
        # in-place updates of one .grad never reach the other.
        g_bias.clone() if has_bias else None,
        g_w_hr if w_hr is not None else None,
        None, None,
    )


# ---------------------------------------------- second- and higher-order autograd
#
# The backward operator is differentiated through the composite reference:
# first-order gradients are re-derived from reference.lstm_layer with
# create_graph=True and their vector-Jacobian product is taken. The saved
# forward results (output, gates, cells) get no gradient of their own because
# the recomputation already accounts for how they depend on the inputs.

_PRIMALS = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def _backward_setup_context(ctx, inputs, output):
    # inputs ends with output_mask where the caller gave it.
    (grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
     _out, _gates, _cells, batch_sizes, reverse) = inputs[:16]
    ctx.reverse = reverse
    ctx.trailing_nones = (None,) * (len(inputs) - 11)
    ctx.save_for_backward(
        grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh,
        w_hr, batch_sizes,
    )


def _backward_backward(ctx, *grads_of_grads):
    if torch.is_grad_enabled():
        # create_graph=True: the second derivative must itself be
        # differentiable (third order and beyond), which the torch.func
        # rule below is, to any order; the detached leaves here are not.
        # (Same values; the plain double backward stays on autograd.grad,
        # ~9 % faster than the torch.func rule on a 2-layer gradient penalty.)
        return _backward_backward_composite(ctx, *grads_of_grads)
    (grad_output, grad_h_n, grad_c_n, *primals, batch_sizes) = ctx.saved_tensors
    cotangents = [grad_output, grad_h_n, grad_c_n]
    with torch.enable_grad():
        leaves = [
            t.detach().requires_grad_() if t is not None else None
            for t in (*cotangents, *primals)
        ]
        cot, prim = leaves[:3], leaves[3:]
        outs = reference.lstm_layer(*prim, batch_sizes, ctx.reverse)
        # Differentiate w.r.t. b_ih only: b_hh's gradient is the same tensor.
        wrt = [p for p in prim if p is not None]
        first = torch.autograd.grad(outs, wrt, cot, create_graph=True)
        first_by_name = dict(zip([n for n, p in zip(_PRIMALS, prim) if p is not None], first))
        order = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "w_hr")
        pairs = [
            (first_by_name[name], gg)
            for name, gg in zip(order, grads_of_grads)
            if name in first_by_name and gg is not None and gg.numel() > 0
        ]
        live = [l for l in leaves if l is not None]
        second = torch.autograd.grad(
            [p[0] for p in pairs], live, [p[1] for p in pairs], allow_unused=True
        ) if pairs else [None] * len(live)
    it = iter(second)
    by_leaf = [next(it) if l is not None else None for l in leaves]
    g = [
        s if s is not None or l is None else torch.zeros_like(l)
        for s, l in zip(by_leaf, leaves)
    ]
    # Inputs: grad_output, grad_h_n, grad_c_n, 8 primals, then out, gates,
    # cells, batch_sizes, reverse (and output_mask), which get none.
    return (*g, *ctx.trailing_nones)


torch.library.register_autograd(
    "fusedlstm::lstm_layer_backward", _backward_backward,
    setup_context=_backward_setup_context,
)


# ------------------------------------------- torch.func and forward-mode AD
#
# torch.func (grad, vjp, jacrev, jacfwd, hessian, vmap) refuses a C++
# torch::autograd::Function ("cannot use C++ torch::autograd::Function with
# functorch transforms": the forward's Autograd kernel), and runs a Python
# one only if it defines setup_context, which the Functions that
# torch.library.register_autograd generates for C++-declared operators do
# not (pytorch/pytorch#170834: the backward's); nor can either carry a
# forward-mode rule.
# Under a functorch transform, or with forward-mode dual tensors, the layer
# therefore runs through the two Functions below: the same operators and the
# same reverse-mode formulas as above, so values and gradients are those of
# plain autograd. Their extra rules:
#   vmap: one call per batch entry, stacked. No batching of the kernel, but
#         exact, and jacrev / jacfwd need it (nn.LSTM has no vmap rule).
#   jvp:  the tangent of the composite reference, as for the second order.


def _functorch_active() -> bool:
    # Not peek_interpreter_stack(): Dynamo reports a stack there even with no
    # transform active, and would then trace the Functions below.
    return torch._C._are_functorch_transforms_active()


def _dual_tensors_present(tensors) -> bool:
    if getattr(forward_ad, "_current_level", 0) < 0:
        return False  # no dual level open: nothing can carry a tangent
    return any(
        t is not None and forward_ad.unpack_dual(t).tangent is not None
        for t in tensors
    )


def _loop_vmap(function):
    """A vmap rule for `function` that applies it to each batch entry."""

    def vmap(info, in_dims, *args):
        per_entry = [
            function.apply(*(
                a if d is None else a.select(d, index)
                for a, d in zip(args, in_dims)
            ))
            for index in range(info.batch_size)
        ]
        stacked = tuple(torch.stack(parts) for parts in zip(*per_entry))
        return stacked, (0,) * len(stacked)

    return staticmethod(vmap)


def _present(values):
    """Positions of the values that are not None, and a function that puts
    replacements for them back among the Nones."""
    where = [i for i, v in enumerate(values) if v is not None]

    def rebuild(replacements):
        full = list(values)
        for i, r in zip(where, replacements):
            full[i] = r
        return full

    return where, rebuild


def _tangents_for(values, tangents):
    return tuple(
        torch.zeros_like(v) if t is None else t
        for v, t in zip(values, tangents) if v is not None
    )


def _reference_first_order(cotangents, primals, batch_sizes, reverse):
    """What lstm_layer_backward returns, derived from the composite
    reference with torch.func.vjp so that it can be differentiated again
    under any transform."""
    where, rebuild = _present(primals)

    def layer(*present):
        return reference.lstm_layer(*rebuild(present), batch_sizes, reverse)

    _, pullback = torch.func.vjp(layer, *(primals[i] for i in where))
    grads = dict(zip(where, pullback(tuple(cotangents))))
    empty = primals[0].new_empty(0)
    # Bias: b_ih (position 5) and b_hh get the same gradient.
    return (grads[0], grads[1], grads[2], grads[3], grads[4],
            grads.get(5, empty), grads.get(7, empty))


def _jvp_by_double_vjp(fn, primals, tangents, output_zeros):
    """fn's Jacobian-vector product from two reverse passes: the pullback is
    linear in its cotangent u, and its own pullback applied to the tangents
    is J @ tangents. Forward mode (torch.func.jvp) cannot serve: a jvp rule
    may run inside an open forward-AD level, and forward AD does not nest.
    output_zeros: zeros shaped as fn's outputs (the point u is taken at)."""

    def pullback_at(u):
        _, pullback = torch.func.vjp(fn, *primals)
        return pullback(u)

    _, pullback_of_pullback = torch.func.vjp(pullback_at, output_zeros)
    (product,) = pullback_of_pullback(tangents)
    return product


def _layer_jvp(ctx, *tangents):
    (*primals, batch_sizes) = ctx.saved_tensors
    input, h0, c0 = primals[:3]
    where, rebuild = _present(primals)
    out_tangents = _jvp_by_double_vjp(
        lambda *present: reference.lstm_layer(*rebuild(present), batch_sizes, ctx.reverse),
        tuple(primals[i] for i in where),
        _tangents_for(primals, tangents[:8]),
        (_with_width(input, h0.shape[-1]).zero_(), torch.zeros_like(h0),
         torch.zeros_like(c0)),
    )
    # gates and cells are not differentiable.
    return (*out_tangents, None, None)


def _saved_first_order(ctx):
    """For the saved inputs of a backward call (3 cotangents, 8 primals,
    batch_sizes): the 11 values, the positions of those present, a function
    that puts replacements for them back, and lstm_layer_backward's results
    as a differentiable function of the present values."""
    (*values, batch_sizes) = ctx.saved_tensors
    where, rebuild = _present(values)

    def first_order(*present):
        full = rebuild(present)
        return _reference_first_order(full[:3], full[3:], batch_sizes, ctx.reverse)

    return values, where, rebuild, first_order


def _backward_jvp(ctx, *tangents):
    values, where, _, first_order = _saved_first_order(ctx)
    input, h0, c0, w_ih, w_hh, b_ih, _, w_hr = values[3:]
    empty = input.new_zeros(0)
    # The saved output, gates and cells (inputs 11-13) are functions of the
    # primals; the recomputation already carries their tangents.
    return _jvp_by_double_vjp(
        first_order,
        tuple(values[i] for i in where),
        _tangents_for(values, tangents[:11]),
        tuple(torch.zeros_like(t) if t is not None else empty
              for t in (input, h0, c0, w_ih, w_hh, b_ih, w_hr)),
    )


def _backward_backward_composite(ctx, *grads_of_grads):
    # Unlike _backward_backward (torch.autograd.grad on the reference, which
    # functorch does not allow inside a transform), this stays differentiable
    # under an enclosing transform, to any order.
    values, where, rebuild, first_order = _saved_first_order(ctx)
    grads, pullback = torch.func.vjp(first_order, *(values[i] for i in where))
    # A result the operator left out (output_mask) came back empty, so its
    # weight here is None or empty: zero for the recomputed gradient.
    weights = tuple(
        torch.zeros_like(g) if w is None or w.shape != g.shape else w
        for g, w in zip(grads, grads_of_grads)
    )
    second = rebuild(pullback(weights))
    # Remaining inputs: out, gates, cells, batch_sizes, reverse (and
    # output_mask).
    return (*second, *ctx.trailing_nones)


def _layer_setup_context(ctx, inputs, output):
    _forward_setup_context(ctx, inputs, output)
    input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, _ = inputs
    ctx.save_for_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes)


def _layer_backward_setup_context(ctx, inputs, output):
    _backward_setup_context(ctx, inputs, output)
    ctx.save_for_forward(*inputs[:11], inputs[14])


class _FunctorchLayerBackward(torch.autograd.Function):
    """lstm_layer_backward under transforms, differentiable to any order."""

    @staticmethod
    def forward(*args):
        return _backward_op(*args)

    setup_context = staticmethod(_layer_backward_setup_context)
    backward = staticmethod(_backward_backward_composite)
    jvp = staticmethod(_backward_jvp)


_FunctorchLayerBackward.vmap = _loop_vmap(_FunctorchLayerBackward)


class _FunctorchLayer(torch.autograd.Function):
    """lstm_layer_forward under transforms and with dual tensors."""

    @staticmethod
    def forward(*args):
        return _forward_op(*args)

    setup_context = staticmethod(_layer_setup_context)
    jvp = staticmethod(_layer_jvp)

    backward = staticmethod(_forward_backward)


_FunctorchLayer.vmap = _loop_vmap(_FunctorchLayer)
