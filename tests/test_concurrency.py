"""Concurrency: calls on one module from several Python threads.

Sixteen calls, each with its own input, run on one shared module from a
pool of four Python threads, must give bitwise what the same calls give one
after another: outputs and states, and gradients taken with
torch.autograd.grad (which returns them rather than accumulating them into
.grad, where the order of the additions would depend on the threads).
With one and with two intra-op threads.

Also: a torch.utils.data.DataLoader whose worker processes run the model
(forked after the parent has run it, and spawned), as a data pipeline with
an LSTM feature extractor does.

The pool's threads start by setting torch's thread count to the main
thread's. OpenMP keeps that count per OS thread, and a new thread starts
from OpenMP's default (all cores), which MKL's GEMM then uses: for some
shapes that changes the GEMM's blocking and the last bit of its results,
for nn.LSTMCell exactly as for fusedlstm.LSTMCell (16 calls on 4 threads at
one intra-op thread: half the calls differ, with either module, without the
initializer; none with it).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from torch.utils.data import DataLoader, Dataset

from helpers import make_cell_pair, make_lstm_pair, state_shapes

CALLS = 16
WORKERS = 4


def _make_task(kind, dtype, backward):
    # "large": products big enough for the oneDNN GEMMs on AVX-512 CPUs (and
    # a step big enough for two recurrence workers); the others run BLAS.
    inputs, steps = (64, 12) if kind == "large" else (5, 7)
    if kind == "cell":
        _, module = make_cell_pair(5, 16, dtype=dtype)
    elif kind == "large":
        _, module = make_lstm_pair(64, 96, dtype=dtype, bidirectional=True)
    else:
        _, module = make_lstm_pair(5, 16, dtype=dtype, num_layers=2, bidirectional=True,
                                   proj_size=4 if kind == "padded" else 0)
    module.eval()

    def task(index):
        gen = torch.Generator().manual_seed(index)
        B = 3 + index % 4  # calls of different shapes at the same time

        def randn(*shape):
            return torch.randn(*shape, generator=gen).to(dtype).requires_grad_(backward)

        if kind == "cell":
            x = randn(B, 5)
            hx = (randn(B, 16), randn(B, 16))
            inp = x
        else:
            x = randn(steps, B, inputs)
            hx = tuple(randn(*s) for s in state_shapes(module, B))
            inp = x
            if kind == "packed":
                lengths = torch.randint(1, 8, (B,), generator=gen)
                lengths[0] = 7
                inp = pack_padded_sequence(x, lengths, enforce_sorted=False)
        with torch.set_grad_enabled(backward):
            out = module(inp, hx)
        if kind == "cell":
            roots = list(out)
        else:
            output, (h_n, c_n) = out
            roots = [output.data if isinstance(output, PackedSequence) else output, h_n, c_n]
        results = [r.detach() for r in roots]
        if backward:
            cotangents = [torch.randn(r.shape, generator=gen).to(dtype) for r in roots]
            results += torch.autograd.grad(roots, [x, *hx, *module.parameters()], cotangents)
        return results

    return task


@pytest.fixture(params=[1, 2], ids=["1_thread", "2_threads"])
def threads(request):
    if request.param == 2:
        request.getfixturevalue("two_threads")
    return request.param


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward_backward"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["padded", "packed", "cell", "large"])
def test_concurrent_calls_match_sequential_calls(kind, dtype, backward, threads):
    task = _make_task(kind, dtype, backward)
    sequential = [task(i) for i in range(CALLS)]
    with ThreadPoolExecutor(max_workers=WORKERS, initializer=torch.set_num_threads,
                            initargs=(threads,)) as pool:
        concurrent = list(pool.map(task, range(CALLS)))
    for index, (a, b) in enumerate(zip(concurrent, sequential)):
        assert len(a) == len(b)
        for position, (x, y) in enumerate(zip(a, b)):
            torch.testing.assert_close(x, y, rtol=0, atol=0,
                                       msg=lambda m, i=index, p=position: f"call {i}, result {p}: {m}")


class LstmFeatures(Dataset):
    """Each item is the final h of one sequence, computed in the worker."""

    def __init__(self, module, sequences):
        self.module, self.sequences = module, sequences

    def __len__(self):
        return len(self.sequences)

    def __getitem__(self, index):
        with torch.no_grad():
            _, (h_n, _) = self.module(self.sequences[index])
        return h_n[-1, 0]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_run_the_model(context):
    """DataLoader's workers set one intra-op thread; each worker's results
    equal the same calls in this process, bitwise. A forked worker inherits
    the parent's state after the parent has run the recurrence on two
    threads (GNU OpenMP's thread pool included: at more than one thread,
    nn.LSTM and fusedlstm.LSTM both hang in a forked child, which is why
    DataLoader sets one)."""
    _, module = make_lstm_pair(8, 32, num_layers=2, bidirectional=True)
    generator = torch.Generator().manual_seed(3)
    sequences = [torch.randn(9, 1, 8, generator=generator) for _ in range(6)]
    dataset = LstmFeatures(module, sequences)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dataset[0]  # the parent runs the recurrence before the workers start
        torch.set_num_threads(1)
        expected = torch.stack([dataset[i] for i in range(len(dataset))])
        loader = DataLoader(dataset, batch_size=2, num_workers=2,
                            multiprocessing_context=context, timeout=120)
        actual = torch.cat(list(loader))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(actual, expected)
