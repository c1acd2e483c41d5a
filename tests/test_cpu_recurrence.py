"""The fused float32 CPU recurrence (csrc/cpu/recurrence_forward_impl.h and
recurrence_backward_impl.h, built for AVX2 and for AVX-512).

float32 layers run it on AVX2+FMA CPUs (the 16-lane build where the CPU has
AVX-512F), forward and backward, with and without proj_size. The suite's other
shapes are small enough that the recurrence runs on one worker; these are
sized so that it splits its hidden units (and, in backward, the columns of
dh) over two workers that meet once (twice) per step, with the edge cases of
its tiling in both builds: H not a multiple of the L-unit block (L = 8 or 16)
or of the 2L-column dh block, H (or P) and 4H longer than one 256-wide
K-chunk, batch sizes that leave partial row tiles, and packed steps whose
rows shrink (forward) or grow (reverse direction).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import make_cell_pair, make_lstm_pair, parity_check, run_lstm

import fusedlstm

# (hidden, batch): at two threads, a step of 8*B*H*H >= 2 * 2**17 FLOPs gets two
# workers. 136 and 200 are multiples of 8 but not of 16, 130 and 300 of
# neither; 300 is two 256-wide K-chunks of the forward product. Batches of 8, 26 and 5 rows leave partial row
# tiles in forward (3-row tiles) and backward (6-row tiles, the last 7 or 8
# rows as 4 + 3 or 4 + 4). For AVX-512's 16-unit blocks, 32-column dh panels
# and 6-row forward tiles: 120 and 180 end in a 32-column panel with 24 and 20
# columns (both halves live, the second partial), and batches of 7, 8 and 9
# run forward as tiles of 6 rows and a lone row, 4 + 4 and 5 + 4 (tiles of
# near-equal sizes; NOTES change 51).
SHAPES = [(136, 8), (130, 8), (200, 4), (72, 26), (300, 5), (120, 7), (180, 9)]


@pytest.mark.parametrize("hidden,batch", SHAPES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_two_workers_padded_matches_nn_lstm(two_threads, hidden, batch, bidirectional):
    ref, ours = make_lstm_pair(11, hidden, num_layers=2, bidirectional=bidirectional,
                               seed=hidden)
    layers = 2 * (2 if bidirectional else 1)
    x = torch.randn(9, batch, 11)
    hx = (torch.randn(layers, batch, hidden), torch.randn(layers, batch, hidden))
    parity_check(ref, ours, x, hx)
    parity_check(ref, ours, x)


@pytest.mark.parametrize("hidden,batch", SHAPES)
def test_two_workers_packed_matches_nn_lstm(two_threads, hidden, batch):
    ref, ours = make_lstm_pair(6, hidden, bidirectional=True, seed=hidden)
    gen = torch.Generator().manual_seed(batch)
    T = 12
    lengths = torch.randint(1, T + 1, (batch,), generator=gen)
    lengths[batch // 2] = T
    x = torch.randn(T, batch, 6, generator=gen)
    hx = (torch.randn(2, batch, hidden, generator=gen),
          torch.randn(2, batch, hidden, generator=gen))
    parity_check(ref, ours, x, hx, lengths=lengths, enforce_sorted=False)


# (hidden, proj_size, batch): a step of 10*B*H*P >= 2 * 2**17 FLOPs, and P of at
# least two 16-column blocks, gives two workers to both phases of a step (at
# two threads; one at one thread). The tile edges of the backward with a
# projection: its unit blocks are 16 units (dm = dh W_hr as a panel tile), of
# which the last holds 8 (H=136: one half empty), 4 (H=100) or 12 (H=140: the
# second half partial; H=300 likewise); P=264 is two 256-wide K-chunks of the forward product
# and of dm; the last 16-column block of dh holds 8, 6, 10 or 8 columns;
# batches of 20, 16, 13 and 7 rows end in row tiles of 4 + 4, 4, 4 + 3 and
# 4 + 3 in the backward.
PROJ_SHAPES = [(136, 40, 20), (100, 70, 16), (140, 90, 13), (300, 264, 7)]


@pytest.mark.parametrize("hidden,proj,batch", PROJ_SHAPES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_projection_padded_matches_nn_lstm(threads, hidden, proj, batch, bidirectional):
    ref, ours = make_lstm_pair(7, hidden, proj_size=proj, num_layers=2,
                               bidirectional=bidirectional, seed=proj)
    layers = 2 * (2 if bidirectional else 1)
    x = torch.randn(8, batch, 7)
    hx = (torch.randn(layers, batch, proj), torch.randn(layers, batch, hidden))
    parity_check(ref, ours, x, hx)
    parity_check(ref, ours, x)


@pytest.mark.parametrize("hidden,proj,batch", PROJ_SHAPES)
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_projection_packed_matches_nn_lstm(threads, hidden, proj, batch, enforce_sorted):
    ref, ours = make_lstm_pair(7, hidden, proj_size=proj, num_layers=2,
                               bidirectional=True, seed=proj)
    gen = torch.Generator().manual_seed(proj)
    T = 10
    lengths = torch.randint(1, T + 1, (batch,), generator=gen)
    lengths[batch // 3] = T
    if enforce_sorted:
        lengths = lengths.sort(descending=True).values
    x = torch.randn(T, batch, 7, generator=gen)
    hx = (torch.randn(4, batch, proj, generator=gen),
          torch.randn(4, batch, hidden, generator=gen))
    parity_check(ref, ours, x, hx, lengths=lengths, enforce_sorted=enforce_sorted)
    parity_check(ref, ours, x, lengths=lengths, enforce_sorted=enforce_sorted)


def test_two_workers_projection_bfloat16_within_twice_torch_error(two_threads):
    ref, ours = make_lstm_pair(8, 140, proj_size=90, bidirectional=True,
                               dtype=torch.bfloat16, seed=4)
    parity_check(ref, ours, torch.randn(9, 13, 8).bfloat16())


def test_two_workers_bfloat16_within_twice_torch_error(two_threads):
    # bfloat16 computes in float32 and so takes the same recurrence.
    ref, ours = make_lstm_pair(8, 130, dtype=torch.bfloat16, seed=3)
    parity_check(ref, ours, torch.randn(10, 8, 8).bfloat16())


# With bfloat16 dot products (AVX-512 BF16 without AMX), the forward walks
# W_hh's depth in chunks of 256 pairs (512 of H) and backward's dh = dG W_hh
# walks 4H the same way: at H = 520 each row tile's sums are parked and
# resumed once per step in forward (the second chunk 4 pairs deep) and four
# times in backward (NOTES change 62). Elsewhere this is two chunks of the
# float recurrence's 256.
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed_bidirectional"])
def test_two_workers_bfloat16_past_one_depth_chunk(two_threads, packed):
    ref, ours = make_lstm_pair(9, 520, bidirectional=packed, dtype=torch.bfloat16, seed=5)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 7, 9, generator=gen).bfloat16()
    if packed:
        lengths = torch.tensor([2, 4, 1, 3, 4, 1, 3])
        parity_check(ref, ours, x, lengths=lengths, enforce_sorted=False)
    else:
        parity_check(ref, ours, x)


@pytest.mark.parametrize("threads", [1, 2])
def test_run_to_run_bitwise_identical(threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, ours = make_lstm_pair(12, 136, num_layers=2, bidirectional=True, seed=5)
        x = torch.randn(15, 8, 12)
        first = run_lstm(ours, x)
        for _ in range(3):
            again = run_lstm(ours, x)
            for key, value in first.items():
                assert torch.equal(again[key], value), key
    finally:
        torch.set_num_threads(old)


# With two threads and no projection, where the batch divides over the
# workers with at least 16 rows each and W_hh's float32 panels fit in 1 MiB,
# the workers split the batch's rows instead of the hidden units (no meeting
# between steps; NOTES change 49); one thread runs every row. A row's sums
# must not depend on the rows it shares a tile with: the samples leave
# workers with 1, 7 and 13 rows (a lone row, a share of one row, tiles of
# unequal sizes), a partial last unit block (H = 200), one-row steps, both
# directions and two layers.
ROW_SPLIT_F32 = [
    ("padded_two_layers_bidirectional", 12, 32, 20, 200, 2, True, None),
    ("packed_shrinking", 9, 32, 16, 200, 1, True,
     # batch sizes 32, 29, 23, 17, 13, 7, 7, 1, 1
     [9] + [7] * 6 + [5] * 6 + [4] * 4 + [3] * 6 + [2] * 6 + [1] * 3),
    ("packed_h128", 8, 64, 24, 128, 1, False,
     [8] * 13 + [6] * 10 + [5] * 18 + [2] * 6 + [1] * 17),
]


@pytest.mark.parametrize("sample", ROW_SPLIT_F32, ids=[s[0] for s in ROW_SPLIT_F32])
def test_float32_rows_split_over_two_threads_gives_one_threads_bits(sample, two_threads):
    """Every output and gradient, and the inference path's output, at two
    threads equal one thread's bit for bit; the one-thread path is the one
    the parity suite holds to nn.LSTM."""
    _, T, B, I, H, layers, bidirectional, lengths = sample
    _, ours = make_lstm_pair(I, H, num_layers=layers, bidirectional=bidirectional, seed=11)
    x = torch.randn(T, B, I)
    lengths = None if lengths is None else torch.tensor(lengths)

    def results():
        out = run_lstm(ours, x, lengths=lengths, enforce_sorted=False)
        with torch.no_grad():
            out["inference_output"] = run_lstm(
                ours, x, lengths=lengths, enforce_sorted=False, backward=False)["output"]
        return out

    two = results()
    torch.set_num_threads(1)
    one = results()
    torch.set_num_threads(2)
    assert two.keys() == one.keys()
    for key in one:
        assert torch.equal(two[key], one[key]), f"{key} differs from one thread's"


def _run_with_environment(value: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FUSEDLSTM_CPU_RECURRENCE=value)
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)


_COMPARE_WITH_NN_LSTM = """
import torch, fusedlstm
torch.manual_seed(0)
ref = torch.nn.LSTM(5, 136, bidirectional=True)
ours = fusedlstm.LSTM(5, 136, bidirectional=True)
ours.load_state_dict(ref.state_dict())
x = torch.randn(7, 8, 5, requires_grad=True)
y_ref, _ = ref(x)
(g_ref,) = torch.autograd.grad(y_ref.sum(), x)
y, _ = ours(x)
(g,) = torch.autograd.grad(y.sum(), x)
torch.testing.assert_close(y, y_ref)
torch.testing.assert_close(g, g_ref)
print("matched")
"""


def test_blas_path_selected_by_environment_matches_nn_lstm():
    done = _run_with_environment("blas", _COMPARE_WITH_NN_LSTM)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "matched"


def test_bad_environment_value_is_an_error():
    done = _run_with_environment("fast", _COMPARE_WITH_NN_LSTM)
    assert done.returncode != 0
    assert ("FUSEDLSTM_CPU_RECURRENCE must be 'auto', 'avx512', 'avx2' or 'blas', "
            "got 'fast'") in done.stderr


# ------------------------------------------------------- calls of few rows
#
# A call of at most 8 rows (steps x batch) runs the forward's direct product,
# from W_hh as it is, with no packing (kDirectMaxRows in
# recurrence_forward_impl.h); a call of one row runs the backward as the BLAS
# loop. These straddle both limits (8 and 9 rows, 1 and 2), with unit blocks
# that end partial (H = 40, 136 and 300 are not multiples of 16; 40 and 300
# not of 8) and contractions whose length is not a multiple of the lanes
# (P = 40, 300, and 37 with a projection), on one and two workers.
FEW_ROWS = [(1, 1), (2, 1), (1, 8), (8, 1), (3, 3), (1, 9), (9, 1), (1, 26)]  # (steps, batch)


@pytest.mark.parametrize("steps,batch", FEW_ROWS)
@pytest.mark.parametrize("hidden,proj", [(40, 0), (136, 0), (300, 0), (100, 37)])
def test_few_rows_match_nn_lstm(threads, steps, batch, hidden, proj):
    ref, ours = make_lstm_pair(13, hidden, proj_size=proj, num_layers=2,
                               seed=hidden + steps)
    x = torch.randn(steps, batch, 13)
    hx = (torch.randn(2, batch, proj or hidden), torch.randn(2, batch, hidden))
    parity_check(ref, ours, x, hx)
    with torch.no_grad():  # the inference operator
        torch.testing.assert_close(ours(x, hx), ref(x, hx))


# A call of one step and more rows than take the input product into the
# step (input_in_steps: 64; tests/test_cpu_one_step.py) packs each unit
# block's panel just before its product (ForwardPlan::pack_in_step), not all
# of W_hh up front: the same panels, so the same sums as the first step of a
# longer call. With input_size 1 the input projection is one exact product
# per gate, whatever the GEMM, so any difference is the recurrence's. Batch
# 80 and 128 at two threads: the two-step call splits the rows, the one-step
# call the units.
@pytest.mark.parametrize("batch", [65, 80, 128])
@pytest.mark.parametrize("hidden,proj", [(136, 0), (300, 0), (100, 37)])
def test_one_step_gives_the_first_step_of_two_bit_for_bit(threads, batch, hidden, proj):
    _, ours = make_lstm_pair(1, hidden, proj_size=proj, seed=batch)
    x = torch.randn(2, batch, 1)
    hx = (torch.randn(1, batch, proj or hidden), torch.randn(1, batch, hidden))
    with torch.no_grad():
        one_output, (one_h, one_c) = ours(x[:1], hx)
        two_output, _ = ours(x, hx)
    assert torch.equal(one_output[0], two_output[0])
    assert torch.equal(one_h[0], two_output[0])
    # Training keeps the gates and cells: the same sums there too.
    one_train, _ = ours(x[:1], hx)
    two_train, _ = ours(x, hx)
    assert torch.equal(one_train[0], two_train[0])
    assert torch.equal(one_train[0], one_output[0])


def test_single_row_cell_matches_nn_lstmcell(threads):
    # LSTMCell at batch 1 (and unbatched) is the one-row case of both.
    ref, ours = make_cell_pair(300, 136, seed=2)
    for x, hx in [(torch.randn(1, 300), (torch.randn(1, 136), torch.randn(1, 136))),
                  (torch.randn(300), (torch.randn(136), torch.randn(136)))]:
        parity_check(ref, ours, x, hx)


# ------------------------------------------- the backward with a projection
#
# One layer-direction's backward op on fixed saved tensors, so that the two
# recurrences (fused, and the BLAS loop under FUSEDLSTM_CPU_RECURRENCE=blas)
# are compared on exactly the same input: forward differences do not enter.

_BACKWARD_NAMES = ["grad_input", "grad_h0", "grad_c0", "grad_w_ih", "grad_w_hh",
                   "grad_bias", "grad_w_hr"]


def _projected_layer_cases():
    """(name, backward op arguments) for padded and packed, both directions."""
    cases = []
    for hidden, proj, batch in PROJ_SHAPES:
        for packed in (False, True):
            for reverse in (False, True):
                gen = torch.Generator().manual_seed(hidden + proj + 2 * packed + reverse)
                k = hidden ** -0.5

                def weight(*shape):
                    return (torch.rand(*shape, generator=gen) * 2 - 1) * k

                T, I = 10, 7
                if packed:
                    lengths = torch.randint(1, T + 1, (batch,), generator=gen)
                    lengths[0] = T
                    lengths = lengths.sort(descending=True).values
                    batch_sizes = torch.stack([(lengths > t).sum() for t in range(T)])
                    x = torch.randn(int(lengths.sum()), I, generator=gen)
                else:
                    batch_sizes = None
                    x = torch.randn(T, batch, I, generator=gen)
                h0 = torch.randn(batch, proj, generator=gen)
                c0 = torch.randn(batch, hidden, generator=gen)
                w_ih, w_hh = weight(4 * hidden, I), weight(4 * hidden, proj)
                b_ih, b_hh = weight(4 * hidden), weight(4 * hidden)
                w_hr = weight(proj, hidden)
                output, h_n, c_n, gates, cells = torch.ops.fusedlstm.lstm_layer_forward(
                    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
                grads = [torch.randn(t.shape, generator=gen) for t in (output, h_n, c_n)]
                cases.append((f"H{hidden}-P{proj}-B{batch}-packed{packed}-reverse{reverse}",
                              grads + [x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                       output, gates, cells, batch_sizes, reverse]))
    return cases


_RUN_SAVED_BACKWARDS = """
import sys, torch, fusedlstm
torch.set_num_threads(int(sys.argv[3]))
cases = torch.load(sys.argv[1])
torch.save({name: list(torch.ops.fusedlstm.lstm_layer_backward(*args))
            for name, args in cases}, sys.argv[2])
print("done")
"""


def _backwards_in_subprocess(value, cases_file, out_file, threads=1):
    env = dict(os.environ, FUSEDLSTM_CPU_RECURRENCE=value)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_SAVED_BACKWARDS, str(cases_file), str(out_file),
         str(threads)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    return torch.load(out_file)


def test_projection_backward_fused_matches_blas_loop(tmp_path):
    cases = _projected_layer_cases()
    torch.save(cases, tmp_path / "cases.pt")
    fused = _backwards_in_subprocess("auto", tmp_path / "cases.pt", tmp_path / "fused.pt")
    blas = _backwards_in_subprocess("blas", tmp_path / "cases.pt", tmp_path / "blas.pt")
    differs = False
    for name, _ in cases:
        for label, a, b in zip(_BACKWARD_NAMES, fused[name], blas[name]):
            torch.testing.assert_close(a, b, msg=lambda m: f"{name} {label}: {m}")
            differs = differs or not torch.equal(a, b)
    # The two paths sum in different orders: identical bits everywhere would
    # mean that both ran the same recurrence, i.e. the fused one did not run.
    assert differs


def test_projection_backward_same_bits_at_one_and_two_threads(tmp_path):
    # Every element of dh and dc is computed by one worker in a fixed order,
    # however many workers split the step. (The whole-sequence GEMMs after the
    # recurrence are MKL's, whose bits may depend on the thread count.)
    cases = _projected_layer_cases()
    torch.save(cases, tmp_path / "cases.pt")
    one = _backwards_in_subprocess("auto", tmp_path / "cases.pt", tmp_path / "1.pt", 1)
    two = _backwards_in_subprocess("auto", tmp_path / "cases.pt", tmp_path / "2.pt", 2)
    for name, _ in cases:
        for label in ("grad_h0", "grad_c0"):
            i = _BACKWARD_NAMES.index(label)
            assert torch.equal(one[name][i], two[name][i]), (name, label)


@pytest.mark.parametrize("threads_", [1, 2])
def test_projection_run_to_run_bitwise_identical(threads_):
    old = torch.get_num_threads()
    torch.set_num_threads(threads_)
    try:
        _, ours = make_lstm_pair(9, 140, proj_size=90, num_layers=2, bidirectional=True,
                                 seed=6)
        x = torch.randn(12, 13, 9)
        lengths = torch.tensor([12, 3, 7, 12, 1, 9, 5, 12, 2, 8, 11, 4, 6])
        for kwargs in ({}, {"lengths": lengths, "enforce_sorted": False}):
            first = run_lstm(ours, x, **kwargs)
            for _ in range(3):
                again = run_lstm(ours, x, **kwargs)
                for key, value in first.items():
                    assert torch.equal(again[key], value), (key, kwargs)
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------ per ISA
#
# A CPU with AVX-512F runs the recurrence in 16-lane registers, others with
# AVX2 in 8-lane ones: the same source compiled twice (recurrence.h); with
# AVX-512 BF16, bfloat16 layers without a projection take a third build with
# bfloat16 dot products. The suite above runs whichever this CPU picks; on an
# AVX-512 CPU the AVX2 build, and the float AVX-512 build for bfloat16
# layers, are held to the same suite (and to the parity grid) in subprocesses
# under FUSEDLSTM_CPU_RECURRENCE=avx2 and =avx512, so every build is tested on
# every CI run that has AVX-512.


def _cpu_flags() -> set:
    with open("/proc/cpuinfo") as f:
        return set(f.read().split())


def test_auto_picks_the_widest_isa_of_this_cpu():
    if os.environ.get("FUSEDLSTM_CPU_RECURRENCE", "auto") not in ("", "auto"):
        pytest.skip("FUSEDLSTM_CPU_RECURRENCE is set for this run")
    flags = _cpu_flags()
    expected = ("avx512" if "avx512f" in flags
                else "avx2" if {"avx2", "fma"} <= flags else "blas")
    assert torch.ops.fusedlstm.cpu_recurrence() == expected


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_other_builds_pass_the_recurrence_suite_and_parity_grid(isa):
    if "avx512f" not in _cpu_flags():
        pytest.skip("no AVX-512 here: the suite above already ran the AVX2 build")
    if isa == "avx512" and "avx512_bf16" not in _cpu_flags():
        pytest.skip("no AVX-512 BF16 here: the suite above already ran the float AVX-512 build")
    if os.environ.get("FUSEDLSTM_CPU_RECURRENCE"):
        pytest.skip("already inside a run with FUSEDLSTM_CPU_RECURRENCE set")
    env = dict(os.environ, FUSEDLSTM_CPU_RECURRENCE=isa)
    check = subprocess.run(
        [sys.executable, "-c", "import torch, fusedlstm; "
         "print(torch.ops.fusedlstm.cpu_recurrence(), torch.ops.fusedlstm.cpu_bfloat16_dot())"],
        env=env, capture_output=True, text=True, timeout=120)
    assert check.stdout.split() == [isa, "False"], check.stderr
    _suite_passes_in_subprocess(env, ["test_cpu_recurrence.py", "test_cpu_one_step.py",
                                      "test_modules_parity.py",
                                      "test_reduced_precision.py", "test_inference_op.py"])


def _suite_passes_in_subprocess(env: dict, files: list) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(os.path.join(here, f) for f in files)],
        env=env, cwd=here, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


# On CPUs with AMX (and Linux's permission to use it), the bfloat16 dot
# products of the forward recurrence and input projection run on AMX tiles
# (csrc/cpu/recurrence_amx.h), and so do the products of a bfloat16 step of
# 4-64 rows (csrc/cpu/amx_step_product.h): the suite above then runs them,
# and the AVX-512 BF16 build's own dot products are held to the same suite
# here under FUSEDLSTM_CPU_AMX=0.


def test_amx_is_used_exactly_where_it_runs():
    if os.environ.get("FUSEDLSTM_CPU_AMX", "auto") not in ("", "auto"):
        pytest.skip("FUSEDLSTM_CPU_AMX is set for this run")
    flags = _cpu_flags()
    expected = ({"amx_bf16", "amx_tile", "avx512_bf16"} <= flags
                and torch.ops.fusedlstm.cpu_bfloat16_dot())
    assert torch.ops.fusedlstm.cpu_amx() == expected


@pytest.mark.parametrize("variable, query, cannot_run", [
    ("FUSEDLSTM_CPU_AMX", "cpu_amx",
     "FUSEDLSTM_CPU_AMX=1, but AMX bfloat16 tiles do not run here"),
    ("FUSEDLSTM_CPU_MKL_BF16", "cpu_mkl_bf16",
     "FUSEDLSTM_CPU_MKL_BF16=1, but MKL's bfloat16 GEMM does not run here"),
], ids=["amx", "mkl_bf16"])
def test_auto_0_1_switch_environment_values(variable, query, cannot_run):
    """0 switches the path off, auto takes it where it runs, 1 raises where it
    cannot run, and any other value raises with the accepted ones."""
    code = f"import torch, fusedlstm; print(torch.ops.fusedlstm.{query}())"
    env = {k: v for k, v in os.environ.items() if k != variable}

    def run(value):
        return subprocess.run([sys.executable, "-c", code], env=dict(env, **{variable: value}),
                              capture_output=True, text=True, timeout=120)

    done = run("0")
    assert done.returncode == 0 and done.stdout.split() == ["False"], done.stderr
    done = run("auto")
    assert done.returncode == 0, done.stderr
    runs_here = done.stdout.split() == ["True"]
    assert f"{variable} must be 'auto', '0' or '1', got 'often'" in run("often").stderr
    done = run("1")
    if runs_here:
        assert done.returncode == 0 and done.stdout.split() == ["True"], done.stderr
    else:
        assert cannot_run in done.stderr


def test_bfloat16_dot_products_without_amx_pass_the_suite():
    if not torch.ops.fusedlstm.cpu_amx():
        pytest.skip("no AMX here: the suite above already ran the AVX-512 BF16 dot products")
    _suite_passes_in_subprocess(dict(os.environ, FUSEDLSTM_CPU_AMX="0"),
                                ["test_cpu_one_step.py", "test_modules_parity.py",
                                 "test_reduced_precision.py", "test_inference_op.py"])


# On AMX, the input projection of bfloat16 layers runs in MKL's bfloat16 GEMM
# where PyTorch's binary carries it (csrc/cpu/mkl_bf16_gemm.h): the suite
# above then runs it, and our own projection tiles are held to the bfloat16
# tests here under FUSEDLSTM_CPU_MKL_BF16=0.


def _torch_exports_mkl_bf16_gemm() -> bool:
    import ctypes
    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        return hasattr(ctypes.CDLL(lib), "gemm_bf16bf16f32_64")
    except OSError:
        return False


def test_mkl_bf16_gemm_is_used_exactly_where_it_runs():
    if os.environ.get("FUSEDLSTM_CPU_MKL_BF16", "auto") not in ("", "auto"):
        pytest.skip("FUSEDLSTM_CPU_MKL_BF16 is set for this run")
    expected = torch.ops.fusedlstm.cpu_amx() and _torch_exports_mkl_bf16_gemm()
    # False where the routine exists but fails its self-check: then this fails.
    assert torch.ops.fusedlstm.cpu_mkl_bf16() == expected


def test_bfloat16_projection_tiles_pass_the_bfloat16_suite():
    if not torch.ops.fusedlstm.cpu_mkl_bf16():
        pytest.skip("MKL's bfloat16 GEMM does not run here: the suite above ran our tiles")
    _suite_passes_in_subprocess(dict(os.environ, FUSEDLSTM_CPU_MKL_BF16="0"),
                                ["test_reduced_precision.py", "test_inference_op.py"])


_PROJECTION_SAMPLE = """
import sys, torch, fusedlstm
torch.manual_seed(0)
m = fusedlstm.LSTM(77, 50, num_layers=2, bidirectional=True).bfloat16()
x = torch.randn(9, 40, 77).bfloat16()
with torch.no_grad():
    y, (h, c) = m(x)
y2, _ = m(x)
y2.float().sum().backward()
torch.save([y, h, c, y2.detach()] + [p.grad for p in m.parameters()], sys.argv[1])
"""


def test_mkl_and_tile_projections_give_the_same_bits(tmp_path):
    """Both sum each output over k in order, in float, from exact products:
    the same bits (csrc/cpu/mkl_bf16_gemm.h), in inference and training."""
    if not torch.ops.fusedlstm.cpu_mkl_bf16():
        pytest.skip("MKL's bfloat16 GEMM does not run here")
    results = []
    for value in ("auto", "0"):
        path = tmp_path / f"{value}.pt"
        done = subprocess.run([sys.executable, "-c", _PROJECTION_SAMPLE, str(path)],
                              env=dict(os.environ, FUSEDLSTM_CPU_MKL_BF16=value),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(torch.load(path))
    for a, b in zip(*results):
        assert torch.equal(a, b)
