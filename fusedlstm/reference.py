"""A differentiable LSTM layer in plain PyTorch ops.

It computes exactly what ``torch.ops.fusedlstm.lstm_layer_forward`` computes,
one step at a time, so that autograd can differentiate it twice. fusedlstm
uses it only for the second derivative (double backward); first-order
gradients always come from the fused kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


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
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (output, h_n, c_n) with the shapes of the fused operator."""
    if batch_sizes is None:
        steps = [input.size(1)] * input.size(0)
        rows = input.reshape(-1, input.size(-1))
    else:
        steps = [int(b) for b in batch_sizes]
        rows = input
    offsets = [0]
    for b in steps[:-1]:
        offsets.append(offsets[-1] + b)

    projected = rows @ w_ih.t()
    if b_ih is not None:
        projected = projected + (b_ih + b_hh)
    h, c = h0, c0
    outputs: list[Optional[Tensor]] = [None] * len(steps)
    order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
    for t in order:
        bs = steps[t]
        h_active, c_active = h[:bs], c[:bs]
        gates = projected[offsets[t] : offsets[t] + bs] + h_active @ w_hh.t()
        i, f, g, o = gates.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c_active + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        outputs[t] = h_new
        # Sequences outside the active rows keep their state: those that have
        # ended (forward) or not yet begun (reverse).
        h = torch.cat([h_new, h[bs:]])
        c = torch.cat([c_new, c[bs:]])
    output = torch.cat(outputs) if outputs else rows.new_zeros(0, h0.size(-1))
    if batch_sizes is None:
        output = output.view(input.size(0), input.size(1), h0.size(-1))
    return output, h, c
