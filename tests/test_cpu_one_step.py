"""Float32 calls of few rows on the CPU, which take their input product into the steps.

A call of one step (an LSTMCell, a decoder's step, an LSTM over T = 1) with at
most 64 rows, or of a few steps with at most 8 rows in all (steps x batch;
while the steps read at most 16 MiB of W_ih between them), runs x W_ih^T and
h W_hh^T in the same registers, as dot products over the weights' rows as
they lie (RecurrentForward::x and input_in_steps in csrc/cpu/recurrence.h;
direct_unit_block_step in csrc/cpu/forward_unit_block.h), instead of calling
a GEMM for the input product. Its register tiles are 4 batch rows x 4 units
on AVX-512 and 2 x 4 on AVX2, the units of a block of 16 (8) taken 4 at a
time, and k in whole registers with a masked rest. So:

- batches 1-9 and 63-64 leave every row-tile remainder, and 65 is the first
  batch past the rule (the GEMM and packed panels again);
- hidden sizes 17, 33, 100 and 136 end in blocks of 1, 1, 4 and 8 units
  (groups of 1 and 4 units), and 64 in whole blocks;
- input sizes 1, 13 and 40 are masked rests only or partly, and 300 spans
  many registers;
- calls of 2-8 steps read each step's rows of x, in either direction and
  packed.

The backward of a float32 call of up to 32 rows takes broadcast-FMA products
of its own (dX, dW_ih, dW_hh, dW_hr: csrc/cpu/few_rows_products_impl.h), with
tiles of 4 output rows x 4 registers: every gradient check below reaches
them, with column rests (I = 13, 40, 300; H = 17, 33, 100, 136) and row
rests (4H and batches not multiples of 4); 63-65 rows take the GEMMs.

On CPUs with AMX, a bfloat16 step of 4-64 rows takes both products on the
tiles instead (csrc/cpu/amx_step_product.h): 16 weight rows a tile, loaded
as they lie, against the batch's rows in tiles of 16, with the last step of
k (I, H not multiples of 32) read from a zero-padded copy, and the last unit
block of an H that is not a multiple of 16 (17, 100, 136 above) from the
tile of rows that ends at H, of which it keeps its own units. H = 8 is too
narrow for a tile and keeps the dot products. test_cpu_recurrence.py runs
this file with AMX switched off too.

test_cpu_recurrence.py runs this file under the AVX2 build too.
"""
from __future__ import annotations

import pytest
import torch

from helpers import assert_bitwise, make_cell_pair, make_lstm_pair, parity_check, run_lstm

import fusedlstm

SIZES = [(1, 17), (13, 100), (40, 136), (300, 33), (64, 64), (5, 8)]
BATCHES = [1, 2, 3, 5, 8, 9, 63, 64, 65]


def _check_inference(ref, ours, x, hx, trained):
    """The inference operator: nn's result in float32; in bfloat16 (judged
    against float64 by parity_check's rule) the training forward's bits."""
    with torch.no_grad():
        result = ours(x, hx)
        if x.dtype == torch.float32:
            torch.testing.assert_close(result, ref(x, hx))
        elif isinstance(result[1], tuple):  # LSTM: output, (h_n, c_n)
            assert_bitwise((result[0], *result[1]),
                           (trained["output"], trained["h_n"], trained["c_n"]),
                           "inference result")
        else:
            assert_bitwise(result, (trained["h_n"], trained["c_n"]), "inference result")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("input_size,hidden", SIZES)
def test_cell_step_matches_nn_lstmcell(threads, input_size, hidden, batch, dtype):
    # bfloat16 takes bfloat16 dot products where the CPU has them (pairs of
    # k: odd sizes end in a half pair), else the float step on widened values.
    ref, ours = make_cell_pair(input_size, hidden, dtype=dtype, seed=hidden + batch)
    x = torch.randn(batch, input_size, dtype=dtype)
    hx = (torch.randn(batch, hidden, dtype=dtype), torch.randn(batch, hidden, dtype=dtype))
    trained, _ = parity_check(ref, ours, x, hx)
    _check_inference(ref, ours, x, hx, trained)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_cell_step_without_bias_or_states(threads, batch):
    ref, ours = make_cell_pair(40, 136, bias=False, seed=batch)
    x = torch.randn(batch, 40)
    parity_check(ref, ours, x, (torch.randn(batch, 136), torch.randn(batch, 136)))
    parity_check(ref, ours, x)  # hx omitted: zero states
    parity_check(ref, ours, torch.randn(40))  # unbatched


@pytest.mark.parametrize("batch", [1, 6, 64, 65])
@pytest.mark.parametrize("hidden,proj", [(100, 37), (136, 0)])
def test_lstm_of_one_step_matches_nn_lstm(threads, hidden, proj, batch):
    # Two layers, both directions: every layer-direction is a one-step call,
    # the second layer's input the first's output.
    ref, ours = make_lstm_pair(13, hidden, proj_size=proj, num_layers=2,
                               bidirectional=True, seed=hidden + batch)
    x = torch.randn(1, batch, 13)
    state = proj or hidden
    hx = (torch.randn(4, batch, state), torch.randn(4, batch, hidden))
    parity_check(ref, ours, x, hx)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, hx), ref(x, hx))


@pytest.mark.parametrize("batch", [3, 64])
def test_packed_sequences_of_length_one(threads, batch):
    # batch_sizes [B]: a packed call of one step.
    ref, ours = make_lstm_pair(40, 136, bidirectional=True, seed=batch)
    x = torch.randn(1, batch, 40)
    lengths = torch.ones(batch, dtype=torch.int64)
    parity_check(ref, ours, x, lengths=lengths)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_reduced_precision_cell_step(dtype):
    # Half computes in float (widened weights and input), and so does
    # bfloat16 where it has no bfloat16 dot products (the AVX2 build, or
    # FUSEDLSTM_CPU_RECURRENCE=avx512): the step takes the widened input.
    ref, ours = make_cell_pair(40, 136, dtype=dtype, seed=3)
    x = torch.randn(5, 40, dtype=dtype)
    hx = (torch.randn(5, 136, dtype=dtype), torch.randn(5, 136, dtype=dtype))
    parity_check(ref, ours, x, hx)


def _step_results(ours, x, hx):
    with torch.no_grad():
        inference = ours(x, hx)
    trained = run_lstm(ours, x, hx)
    return inference, trained


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch", [4, 9, 64])
def test_same_bits_at_one_and_two_threads_and_from_run_to_run(batch, dtype):
    # Each preactivation is one tile's dot product in a fixed order, whichever
    # worker runs its unit block, so the thread count cannot change a bit;
    # the training forward and the inference operator run the same step.
    # The backward's recurrence (grad_h0, grad_c0) is ours and fixed too.
    # (H = 136 at batch 4 is over 2 * 2**17 FLOPs a step: two workers.)
    _, ours = make_cell_pair(40, 136, dtype=dtype, seed=batch)
    x = torch.randn(batch, 40, dtype=dtype)
    hx = (torch.randn(batch, 136, dtype=dtype), torch.randn(batch, 136, dtype=dtype))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_inference, one_trained = _step_results(ours, x, hx)
        torch.set_num_threads(2)
        two_inference, two_trained = _step_results(ours, x, hx)
        again_inference, again_trained = _step_results(ours, x, hx)
    finally:
        torch.set_num_threads(old)
    assert_bitwise(two_inference, one_inference, "inference result")
    assert_bitwise(again_inference, two_inference, "inference result")
    assert_bitwise((one_trained["h_n"], one_trained["c_n"]), one_inference,
                   "training forward's result")
    # The input and weight gradients of float32 calls up to 32 rows are our
    # few-rows products (cpu/few_rows_products_impl.h), each element summed
    # in a fixed order; past them, and for bfloat16 dot products, a GEMM's,
    # whose bits may follow the thread count: the same from run to run only.
    ours = dtype == torch.float32 and batch <= 32
    for key in one_trained if ours else ("h_n", "c_n", "grad_h0", "grad_c0"):
        assert_bitwise((two_trained[key],), (one_trained[key],), key)
    for key, value in two_trained.items():
        assert_bitwise((again_trained[key],), (value,), key)


def test_long_dot_products_are_as_accurate_as_nn():
    # K = I + H = 1024 terms a preactivation: the error against float64 is
    # within twice nn.LSTMCell's own float32 error.
    ref, ours = make_cell_pair(512, 512, seed=5)
    ref64 = torch.nn.LSTMCell(512, 512).double()
    ref64.load_state_dict(ref.state_dict())
    x = torch.randn(6, 512)
    hx = (torch.randn(6, 512), torch.randn(6, 512))
    with torch.no_grad():
        exact = ref64(x.double(), tuple(t.double() for t in hx))
        ours_out, nn_out = ours(x, hx), ref(x, hx)
    for name, a, b, e in zip(("h", "c"), ours_out, nn_out, exact):
        ours_error = (a.double() - e).abs().max().item()
        nn_error = (b.double() - e).abs().max().item()
        assert ours_error <= 2 * nn_error + torch.finfo(torch.float32).eps, (
            name, ours_error, nn_error)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch", [1, 5, 16, 33])
def test_non_finite_weights_stay_in_their_units(threads, batch, dtype):
    # An Inf or NaN weight reaches only its own unit's gate, as in nn: the
    # masked rest of a dot product (k past I or H; in bfloat16 dot products
    # the half pair of an odd I) must not read the next weight row, where
    # Inf * 0 would be NaN. Most poisoned entries start rows (k = 0), just
    # past the rest of the row before; on AMX tiles (batch 5 and up, in
    # bfloat16), unit 90 lies in both the tile of units 80-95 and the one
    # ending at H = 100 that holds units 96-99, and W_ih's last entry is in
    # the zero-padded last step of k.
    ref, ours = make_cell_pair(13, 100, dtype=dtype, seed=batch)
    with torch.no_grad():
        for module in (ref, ours):
            module.weight_ih[6, 0] = float("inf")
            module.weight_hh[3 * 100 + 41, 0] = float("nan")
            module.weight_hh[2 * 100 + 17, 0] = float("-inf")
            module.weight_hh[100 + 90, 5] = float("inf")
            module.weight_ih[4 * 100 - 1, 12] = float("nan")
    x = torch.randn(batch, 13, dtype=dtype)
    hx = (torch.randn(batch, 100, dtype=dtype), torch.randn(batch, 100, dtype=dtype))
    with torch.no_grad():
        ours_h, ours_c = ours(x, hx)
        ref_h, ref_c = ref(x, hx)
    assert ref_h.isfinite().sum() >= 97 * batch, "nn spread the poison: a moot case"
    # Which entries are not finite, exactly; the finite ones only loosely in
    # bfloat16 (its parity rule, against float64, is the tests' above).
    for a, e in ((ours_h, ref_h), (ours_c, ref_c)):
        assert torch.equal(a.isnan(), e.isnan()) and torch.equal(a.isinf(), e.isinf())
        torch.testing.assert_close(a[a.isfinite()], e[e.isfinite()],
                                   **({} if dtype == torch.float32 else
                                      {"rtol": 0.05, "atol": 0.05}))


# (steps, batch): 8 rows or fewer, so the steps take the input product; 3 x 3
# is past the rule, for the boundary.
FEW_STEPS = [(2, 1), (2, 4), (4, 2), (8, 1), (3, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("steps,batch", FEW_STEPS)
@pytest.mark.parametrize("hidden,proj", [(17, 0), (100, 37), (136, 0)])
def test_few_steps_match_nn_lstm(threads, steps, batch, hidden, proj, dtype):
    ref, ours = make_lstm_pair(13, hidden, proj_size=proj, num_layers=2,
                               bidirectional=True, dtype=dtype, seed=hidden + steps)
    x = torch.randn(steps, batch, 13, dtype=dtype)
    hx = (torch.randn(4, batch, proj or hidden, dtype=dtype),
          torch.randn(4, batch, hidden, dtype=dtype))
    trained, _ = parity_check(ref, ours, x, hx)
    _check_inference(ref, ours, x, hx, trained)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("steps,batch", [(1, 1), (1, 3), (2, 4), (1, 9)])
def test_wide_layers_of_few_rows_match_nn_lstm(threads, steps, batch, dtype):
    # H = 520 (W_hh 4 MiB in float32): the backward recurrence of up to 8
    # rows reads W_hh as it lies in both dtypes (bfloat16 from H = 512), in
    # column strips with a partial last register and split over the
    # workers; 9 rows are past the rule, for the boundary.
    ref, ours = make_lstm_pair(24, 520, dtype=dtype, seed=steps + batch)
    x = torch.randn(steps, batch, 24, dtype=dtype)
    hx = (torch.randn(1, batch, 520, dtype=dtype), torch.randn(1, batch, 520, dtype=dtype))
    trained, _ = parity_check(ref, ours, x, hx)
    _check_inference(ref, ours, x, hx, trained)


@pytest.mark.parametrize("lengths", [[4, 2], [1, 3], [2, 2, 1, 1]])
def test_few_steps_packed_match_nn_lstm(threads, lengths):
    # Steps of shrinking batch (growing in the reverse direction): each
    # step's rows of x start at its offset in the packed data.
    ref, ours = make_lstm_pair(40, 136, bidirectional=True, seed=len(lengths))
    T, B = max(lengths), len(lengths)
    x = torch.randn(T, B, 40)
    hx = (torch.randn(2, B, 136), torch.randn(2, B, 136))
    parity_check(ref, ours, x, hx, lengths=torch.tensor(lengths), enforce_sorted=False)


def test_few_steps_same_bits_at_one_and_two_threads():
    _, ours = make_lstm_pair(40, 136, bidirectional=True, seed=9)
    x = torch.randn(4, 2, 40)
    old = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                output, (h, c) = ours(x)
            results.append((output, h, c))
    finally:
        torch.set_num_threads(old)
    assert_bitwise(results[1], results[0], "two threads' result")
    assert_bitwise(results[2], results[1], "the rerun's result")
