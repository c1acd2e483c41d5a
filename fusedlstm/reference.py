"""A differentiable LSTM layer in plain PyTorch ops.

It computes exactly what ``torch.ops.fusedlstm.lstm_layer_forward`` computes,
one step at a time, so that autograd can differentiate it twice. fusedlstm
uses it for the second derivative (double backward) and for tangents
(forward-mode AD, torch.func.jvp), and for the LSTMCell calls the fused
kernels do not take (hidden_size 0; through ``cell_update``, a c of another
dtype than the input); every other first-order gradient comes from the
fused kernels.

Packed input is handled with static shapes only (a gather to [T, B], and a
mask per step), never by reading batch_sizes' values on the host, so that
AOTAutograd can trace it with batch_sizes unknown.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _packed_layout(batch_sizes: Tensor, batch: int, rows: int):
    """For packed data: index [T, B] of each (step, sequence) row (clamped
    where the sequence is not active), the activity mask [T, B], and for each
    packed row its position in the flattened [T * B] padded layout."""
    steps = batch_sizes.shape[0]
    sizes = batch_sizes.to(torch.long)
    offsets = torch.cumsum(sizes, 0) - sizes
    lane = torch.arange(batch, device=sizes.device)
    active = lane.unsqueeze(0) < sizes.unsqueeze(1)
    row = (offsets.unsqueeze(1) + lane.unsqueeze(0)).clamp(max=max(rows - 1, 0))
    # Inactive slots scatter into a spare last entry that is dropped.
    target = torch.where(active, row, torch.full_like(row, rows))
    flat = torch.arange(steps * batch, device=sizes.device)
    position = torch.zeros(rows + 1, dtype=torch.long, device=sizes.device)
    position = position.scatter(0, target.reshape(-1), flat)[:rows]
    return row, active, position


class _RoundGradient(torch.autograd.Function):
    """Identity forward; backward rounds the gradient to `dtype` and back."""

    @staticmethod
    def forward(ctx, value: Tensor, dtype: torch.dtype) -> Tensor:
        ctx.dtype = dtype
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad.to(ctx.dtype).to(grad.dtype), None


def _rounded(value: Tensor, dtype: torch.dtype) -> Tensor:
    """value rounded to dtype and back, with the gradient passed through
    unrounded (the rounding is of a value that is used, not a function of it
    to differentiate)."""
    return value + (value.to(dtype).to(value.dtype) - value).detach()


def cell_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """(h', c') from the step's gate preactivations [B, 4H] (input, forget,
    cell, output) and c [B, H], in the order of operations of ATen's
    lstm_cell; c of another dtype is promoted as there."""
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def lstm_layer(
    input: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor],
    b_hh: Optional[Tensor],
    w_hr: Optional[Tensor],
    batch_sizes: Optional[Tensor],
    reverse: bool,
    *,
    round_h_to: Optional[torch.dtype] = None,
    round_gate_grads_to: Optional[torch.dtype] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (output, h_n, c_n) with the shapes of the fused operator.

    Two roundings model the arithmetic of fusedlstm's bfloat16 layers on CPUs
    with bfloat16 dot products (None, the default, rounds nothing):
    ``round_h_to``: h_{t-1} enters the recurrent product rounded to this dtype
    (and back); its gradient passes through unrounded.
    ``round_gate_grads_to``: in backward, the gradient of each step's gate
    preactivations is rounded to this dtype before anything uses it."""
    batch = h0.shape[0]
    if batch_sizes is None:
        padded = input
        active = None
    else:
        row, active, position = _packed_layout(
            batch_sizes.to(input.device), batch, input.shape[0]
        )
        padded = input[row]  # [T, B, I]; inactive slots hold stand-in rows

    projected = padded @ w_ih.t()
    if b_ih is not None:
        projected = projected + (b_ih + b_hh)
    h, c = h0, c0
    steps = padded.shape[0]
    outputs: list[Optional[Tensor]] = [None] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        h_in = h if round_h_to is None else _rounded(h, round_h_to)
        gates = projected[t] + h_in @ w_hh.t()
        if round_gate_grads_to is not None:
            gates = _RoundGradient.apply(gates, round_gate_grads_to)
        h_new, c_new = cell_update(gates, c)
        # A float32 c0 with reduced-precision input (the CPU operators take
        # it) keeps c in float32; h stays in the input's dtype.
        h_new = h_new.to(h0.dtype)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        if active is not None:
            # Sequences that are not active keep their state: those that have
            # ended (forward) or not yet begun (reverse).
            keep = active[t].unsqueeze(1)
            h_new = torch.where(keep, h_new, h)
            c_new = torch.where(keep, c_new, c)
        outputs[t] = h_new
        h, c = h_new, c_new
    if steps:
        output = torch.stack(outputs)  # type: ignore[arg-type]
    else:
        output = padded.new_zeros(0, batch, h0.shape[-1])
    if batch_sizes is not None:
        output = output.reshape(-1, h0.shape[-1])[position]
    return output, h, c
