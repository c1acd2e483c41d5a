"""FLOP counts of the fusedlstm operators for torch.utils.flop_counter.

FlopCounterMode counts the matrix products of the operators it knows and
nothing for the rest, so without these a model's count (its MFU, say)
left out every LSTM layer. Like torch's own formulas, only the products
count, two FLOPs per multiply-add; the cells' elementwise work does not.

N is the number of rows the layer computes: T * B for padded input, the
sum of the lengths for packed input (no work on padding). Per layer and
direction, with I the input size, H the hidden size and P the size of h
(H, or proj_size):

* forward and inference: the input projection 2N(4H)I, the recurrent
  products 2N(4H)P and, with a projection, 2NHP;
* backward: the same products twice over (each product's two gradients:
  the input's and W_ih's, h's and W_hh's, and W_hr's and the cell
  output's), as the operator computes all of them.

The bidirectional operators count as the two one-direction calls they
make. These are the counts of torch's native LSTM for the same work
(tests/test_flop_counts.py), which nn.LSTM reports where it runs that path;
on oneDNN (and cuDNN) nn.LSTM reports none.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula


def _forward_flops(input_shape, h0_shape, w_ih_shape, w_hr_shape) -> int:
    rows = input_shape[0] * (input_shape[1] if len(input_shape) == 3 else 1)
    gates, inputs = w_ih_shape
    state = h0_shape[-1]
    flops = 2 * rows * gates * (inputs + state)
    if w_hr_shape is not None:
        flops += 2 * rows * w_hr_shape[0] * w_hr_shape[1]
    return flops


@register_flop_formula([torch.ops.fusedlstm.lstm_layer_forward,
                        torch.ops.fusedlstm.lstm_layer_inference])
def _layer_flops(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse,
                 *args, out_shape=None, **kwargs) -> int:
    return _forward_flops(input, h0, w_ih, w_hr)


@register_flop_formula(torch.ops.fusedlstm.lstm_layer_backward)
def _layer_backward_flops(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh,
                          b_ih, b_hh, w_hr, output, gates, cells, batch_sizes, reverse,
                          *args, out_shape=None, **kwargs) -> int:
    return 2 * _forward_flops(input, h0, w_ih, w_hr)


@register_flop_formula([torch.ops.fusedlstm.lstm_bidirectional_inference,
                        torch.ops.fusedlstm.lstm_bidirectional_forward])
def _bidirectional_flops(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, h0_r, c0_r, w_ih_r,
                         w_hh_r, b_ih_r, b_hh_r, w_hr_r, batch_sizes,
                         *args, out_shape=None, **kwargs) -> int:
    return _forward_flops(input, h0, w_ih, w_hr) + _forward_flops(input, h0_r, w_ih_r, w_hr_r)


@register_flop_formula(torch.ops.fusedlstm.lstm_bidirectional_backward)
def _bidirectional_backward_flops(g_o, g_h, g_c, g_o_r, g_h_r, g_c_r, input, h0, c0, w_ih,
                                  w_hh, b_ih, b_hh, w_hr, output, gates, cells, h0_r, c0_r,
                                  w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r, *args,
                                  out_shape=None, **kwargs) -> int:
    return 2 * (_forward_flops(input, h0, w_ih, w_hr) + _forward_flops(input, h0_r, w_ih_r, w_hr_r))
