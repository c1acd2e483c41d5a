"""The multi-layer, bidirectional LSTM as a function of its weights.

``lstm`` stacks the one-layer, one-direction operator: each layer's
directions run on the same input (on CUDA, optionally at the same time:
fusedlstm/_directions.py) and are concatenated, and dropout falls between
layers exactly where ``torch.nn.LSTM`` puts it, drawing from the RNG in the
same order, so that a fixed seed gives the same masks.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _directions, _state_dtypes, ops, reference
from ._tracing import shapes_fixed_by_module, tracing_or_compiling


def lstm(
    input: Tensor,
    hx: tuple[Tensor, Tensor],
    weights: Sequence[Tensor],
    *,
    num_layers: int,
    bias: bool,
    bidirectional: bool,
    proj_size: int = 0,
    dropout: float = 0.0,
    training: bool = False,
    batch_first: bool = False,
    batch_sizes: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Runs a stacked LSTM; returns (output, h_n, c_n).

    Args:
        input: [T, B, I] ([B, T, I] with ``batch_first``), or the packed data
            [N, I] of a ``PackedSequence`` together with its ``batch_sizes``.
        hx: (h0 [L*D, B, P], c0 [L*D, B, H]), D = 2 if bidirectional else 1,
            P = proj_size or H.
        weights: ``nn.LSTM._flat_weights`` order: per layer and direction
            w_ih [4H, I_l], w_hh [4H, P], then b_ih, b_hh [4H] if ``bias``,
            then w_hr [P, H] if ``proj_size``.

    The states are in the input's dtype, with two exceptions that follow
    ``nn.LSTM`` on the CPU (fusedlstm/_state_dtypes.py, which casts a
    narrower c0 before this):

    * a float32 c0 with bfloat16/float16 input where nn.LSTM runs oneDNN:
      c is carried in float32, and c_n returned in float32;
    * otherwise, c0 of another dtype for one step of one layer without
      ``proj_size``: each direction runs torch's own cell step, which
      promotes it as nn.LSTM's native loop does.
    """
    directions = 2 if bidirectional else 1
    per_direction = _weights_per_direction(bias, proj_size)
    if len(weights) != num_layers * directions * per_direction:
        raise ValueError(
            f"lstm: expected {num_layers * directions * per_direction} weight "
            f"tensors, got {len(weights)}"
        )
    h0, c0 = hx
    if (c0.dtype != input.dtype and h0.dtype == input.dtype and proj_size == 0
            and _one_step_of_one_layer(input, batch_sizes, num_layers, batch_first)
            and not _state_dtypes.onednn_takes_float32_c0(input, hx, batch_sizes, False)):
        return _one_step_promoting_c(input, hx, weights, bias=bias, directions=directions,
                                     batch_first=batch_first, packed=batch_sizes is not None)
    layer_input = input.transpose(0, 1) if batch_first and batch_sizes is None else input
    if (layer_input is not input and torch.is_grad_enabled() and not tracing_or_compiling()
            and input.is_inference()):
        # autograd refuses to save an inference tensor (made under
        # torch.inference_mode) for backward, and nn.LSTM saves the copy its
        # input projection makes of the transposed view: it takes such input
        # batch-first, and refuses it time-major, as the layers here do.
        layer_input = layer_input.contiguous()
    concurrent = directions == 2 and _directions.run_concurrently(layer_input)
    h_n, c_n = [], []
    for layer in range(num_layers):
        args = [_direction_args(h0, c0, weights, layer * directions + d, bias, proj_size)
                for d in range(directions)]
        if concurrent:
            results = _directions.forward_and_reverse(
                layer_input.device,
                lambda: ops.lstm_layer(layer_input, *args[0], batch_sizes, False),
                lambda: ops.lstm_layer(layer_input, *args[1], batch_sizes, True))
        elif directions == 2 and ops.bidirectional_applies(layer_input, *args[0], *args[1]):
            # One call (and one backward node) for both directions: on the
            # CPU they can run at once.
            results = ops.lstm_bidirectional(layer_input, args[0], args[1], batch_sizes)
        else:
            results = [ops.lstm_layer(layer_input, *a, batch_sizes, d == 1)
                       for d, a in enumerate(args)]
        outputs = [out for out, _, _ in results]
        h_n += [h for _, h, _ in results]
        c_n += [c for _, _, c in results]
        layer_input = torch.cat(outputs, -1) if directions == 2 else outputs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    output = layer_input.transpose(0, 1) if batch_first and batch_sizes is None else layer_input
    return output, torch.stack(h_n), torch.stack(c_n)


def _weights_per_direction(bias: bool, proj_size: int) -> int:
    """w_ih, w_hh, then b_ih, b_hh with ``bias``, then w_hr with a projection."""
    return (4 if bias else 2) + (1 if proj_size > 0 else 0)


def _direction_args(h0, c0, weights, index, bias, proj_size):
    """(h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) of layer-direction ``index``."""
    per_direction = _weights_per_direction(bias, proj_size)
    w = weights[index * per_direction : (index + 1) * per_direction]
    return (h0[index], c0[index], w[0], w[1], w[2] if bias else None,
            w[3] if bias else None, w[-1] if proj_size > 0 else None)


def lstm_cell(
    input: Tensor,
    hx: tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step: input [B, I], hx = (h [B, H], c [B, H]); returns (h', c').

    h is in the input's dtype. A c of another dtype is promoted in the cell
    update, as by ``torch.nn.LSTMCell``: h' and c' come out in the promoted
    dtype (float64 for a float64 c, the input's dtype for a lower-precision
    or integer c)."""
    if hx[1].dtype != input.dtype:
        return _cell_step_promoting_c(input, hx, w_ih, w_hh, b_ih, b_hh)
    with shapes_fixed_by_module():
        no_units = bool(w_ih.shape[0] == 0)
    if no_units:
        # hidden_size 0, which nn.LSTMCell accepts: the fused kernels need at
        # least one unit, and the composite gives the same empty states (and
        # zero gradients for input and hx). Devices are checked as the
        # operators check them: on meta input torch's decompositions take a
        # CPU weight with no elements as they take a scalar.
        ops._check_devices("lstm_cell", input, None, h0=hx[0], c0=hx[1], w_ih=w_ih,
                           w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
        _, h, c = reference.lstm_layer(
            input.unsqueeze(0), hx[0], hx[1], w_ih, w_hh, b_ih, b_hh, None, None, False
        )
        return h, c
    _, h, c = ops.lstm_layer(input.unsqueeze(0), hx[0], hx[1], w_ih, w_hh, b_ih, b_hh)
    return h, c


def _one_step_of_one_layer(input, batch_sizes, num_layers, batch_first) -> bool:
    """Whether a layer call is a single time step of a single layer, where
    torch's native loop returns the results of a wider c0 instead of failing
    at the next product (fusedlstm/_state_dtypes.py)."""
    if num_layers != 1:
        return False
    if batch_sizes is not None:
        return batch_sizes.size(0) == 1
    return input.size(1 if batch_first else 0) == 1


def _one_step_promoting_c(input, hx, weights, *, bias, directions, batch_first, packed):
    # One step of one layer with a c0 of another dtype: each direction is
    # one cell step, in which torch's native loop promotes c0 (for a wider
    # c0 it returns wider results; see fusedlstm/_state_dtypes.py).
    x = input if packed else (input[:, 0] if batch_first else input[0])
    hs, cs = [], []
    for direction in range(directions):
        h0, c0, w_ih, w_hh, b_ih, b_hh, _ = _direction_args(*hx, weights, direction, bias,
                                                            proj_size=0)
        h, c = _cell_step_promoting_c(x, (h0, c0), w_ih, w_hh, b_ih, b_hh)
        hs.append(h)
        cs.append(c)
    output = torch.cat(hs, -1) if directions == 2 else hs[0]
    if not packed:
        output = output.unsqueeze(1 if batch_first else 0)
    return output, torch.stack(hs), torch.stack(cs)


def _cell_step_promoting_c(input, hx, w_ih, w_hh, b_ih, b_hh):
    # The fused kernels keep the cell in the input's dtype, so this case runs
    # torch's own composite step (ATen's lstm_cell, in its order of
    # operations): the same values and gradients as nn.LSTMCell, unfused.
    h, c = hx
    return reference.cell_update(F.linear(h, w_hh, b_hh) + F.linear(input, w_ih, b_ih), c)
