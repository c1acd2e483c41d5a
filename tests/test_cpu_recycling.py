"""The CPU operators' recycled blocks (csrc/cpu/recycling_allocator.h).

Their outputs, saved activations and gradients of 256 KiB and more come from
blocks that freed tensors leave behind, contents unspecified. The tests fill
the idle blocks with NaN bytes before a call (cpu_poison_recycled), so any
element an operator reads before writing shows; they check that the blocks
are really reused (else the poisoning proves nothing), that the cap holds,
and that the tensors behave as any CPU tensor: resized, saved, shared,
accumulated into, freed from other threads and after fork.
"""
from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import fusedlstm
from helpers import assert_bitwise, make_cell_pair, make_lstm_pair, parity_check, run_lstm

OPS = torch.ops.fusedlstm
TESTS = Path(__file__).resolve().parent

if OPS.cpu_recycle_cap_bytes() == 0:
    pytest.skip("FUSEDLSTM_CPU_RECYCLE_MIB=0 in this run: nothing is recycled "
                "(test_off_keeps_nothing covers that setting)", allow_module_level=True)


def _idle() -> int:
    return OPS.cpu_recycled_idle_bytes()


def _assert_same_results(actual: dict, expected: dict, what: str):
    assert sorted(actual) == sorted(expected), (what, sorted(actual), sorted(expected))
    for key in expected:
        assert_bitwise([actual[key]], [expected[key]], f"{what}: {key}")


# Each config has buffers of at least 256 KiB (gates, cells, outputs, weight
# gradients), and between them they take every path that fills one: the
# fused recurrence with the input GEMM and with the input product in the
# step, the few-rows backward and the GEMM one, bfloat16 dot products,
# projection, packed bidirectional layers, the float64 BLAS loop.
CONFIGS = {
    "cell_one_step_256": dict(cell=True, input=256, hidden=256, batch=4),
    "cell_one_step_batch64": dict(cell=True, input=128, hidden=256, batch=64),
    "layer_T40_B8_256": dict(input=64, hidden=256, steps=40, batch=8),
    "packed_bidir_proj": dict(input=48, hidden=128, steps=60, batch=12,
                              kwargs=dict(num_layers=2, bidirectional=True, proj_size=64),
                              lengths=[60, 3, 59, 41, 60, 17, 30, 1, 55, 60, 12, 44]),
    "bfloat16_dot": dict(input=64, hidden=256, steps=40, batch=16, dtype=torch.bfloat16),
    "bfloat16_proj": dict(input=64, hidden=256, steps=40, batch=16, dtype=torch.bfloat16,
                          kwargs=dict(proj_size=96)),
    "float64_blas_loop": dict(input=32, hidden=128, steps=40, batch=8, dtype=torch.float64),
}


def _modules(c):
    dtype = c.get("dtype", torch.float32)
    if c.get("cell"):
        return make_cell_pair(c["input"], c["hidden"], dtype=dtype)
    return make_lstm_pair(c["input"], c["hidden"], dtype=dtype, **c.get("kwargs", {}))


def _input(c):
    dtype = c.get("dtype", torch.float32)
    gen = torch.Generator().manual_seed(5)
    shape = (c["batch"], c["input"]) if c.get("cell") else (c["steps"], c["batch"], c["input"])
    return torch.randn(*shape, generator=gen).to(dtype)


def _run(module, c, x, backward=True):
    lengths = c.get("lengths")
    return run_lstm(module, x, lengths=None if lengths is None else torch.tensor(lengths),
                    enforce_sorted=False, backward=backward)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_poisoned_blocks_never_reach_results(name, threads):
    c = CONFIGS[name]
    ref, ours = _modules(c)
    x = _input(c)
    # Against nn first: the results below are then known to be right.
    first, _ = parity_check(ref, ours, x,
                            lengths=None if c.get("lengths") is None else torch.tensor(c["lengths"]),
                            enforce_sorted=False)
    first = {k: v.clone() for k, v in first.items()}
    ours.zero_grad(set_to_none=True)
    gc.collect()
    assert _idle() >= 256 << 10, "the call left no block to recycle: the test would prove nothing"
    for _ in range(2):
        OPS.cpu_poison_recycled()
        again = _run(ours, c, x)
        _assert_same_results(again, first, f"{name} after poisoning")
        del again
        ours.zero_grad(set_to_none=True)
        gc.collect()
    OPS.cpu_poison_recycled()
    with torch.no_grad():
        inference = _run(ours, c, x, backward=False)
    _assert_same_results(inference, {k: first[k] for k in inference},
                         f"{name} inference after poisoning")


def test_blocks_are_reused_not_accumulated():
    """A training loop's idle blocks settle at one step's worth: each step
    takes back what the one before freed."""
    torch.manual_seed(0)
    cell = fusedlstm.LSTMCell(256, 256)
    x = torch.randn(4, 256, requires_grad=True)

    def step():
        h, c = cell(x)
        (h.sum() + c.sum()).backward()
        cell.zero_grad(set_to_none=True)

    OPS.cpu_release_recycled()
    assert _idle() == 0
    step()
    settled = _idle()
    # dW_ih and dW_hh, 1 MiB each: freed by zero_grad into the idle list.
    assert settled >= 2 << 20
    for _ in range(20):
        step()
        assert _idle() == settled


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("batch", [4, 64], ids=["few_rows", "gemm"])
def test_weight_gradients_come_from_recycled_blocks(dtype, batch):
    """dW_ih and dW_hh (512 KiB each here, 8 MiB at H = 1024) come from the
    recycled blocks on every backward path. From at::mm's allocator they were
    freed to glibc after autograd added them to .grad, which trimmed its heap
    and faulted the pages back in on the next call (NOTES change 81)."""
    torch.manual_seed(0)
    cell = fusedlstm.LSTMCell(256, 256, dtype=dtype)
    x = torch.randn(batch, 256, dtype=dtype)
    h, c = cell(x)
    (h.float().sum() + c.float().sum()).backward()
    sizes = [cell.weight_ih.grad.nbytes, cell.weight_hh.grad.nbytes]
    assert min(sizes) >= 256 << 10
    before = _idle()
    del h, c
    cell.zero_grad(set_to_none=True)
    gc.collect()
    freed = _idle() - before
    assert freed >= sum(sizes), (
        f"zero_grad returned {freed} bytes to the recycled blocks; the weight "
        f"gradients alone are {sum(sizes)}")


def test_release_frees_the_idle_blocks():
    cell = fusedlstm.LSTMCell(256, 256)
    h, c = cell(torch.randn(4, 256))
    (h.sum() + c.sum()).backward()
    cell.zero_grad(set_to_none=True)
    assert _idle() > 0
    OPS.cpu_release_recycled()
    assert _idle() == 0


def test_recycled_tensors_behave_like_any_cpu_tensor(tmp_path):
    """A weight gradient that autograd kept as .grad (it takes the returned
    tensor itself on the first backward) is recycled memory: it resizes,
    saves, loads, shares and converts like any CPU tensor, and freeing it
    returns its block."""
    ref, ours = make_cell_pair(256, 256)
    x = torch.randn(4, 256)
    for module in (ref, ours):
        h, c = module(x)
        (h.sum() + c.sum()).backward()
    grad = ours.weight_ih.grad
    torch.testing.assert_close(grad, ref.weight_ih.grad)
    expected = grad.clone()

    buffer = io.BytesIO()
    torch.save(grad, buffer)
    buffer.seek(0)
    assert_bitwise([torch.load(buffer)], [expected], "saved and loaded")

    # A second backward accumulates into it, as into any .grad.
    for module in (ref, ours):
        h, c = module(x)
        (h.sum() + c.sum()).backward()
    torch.testing.assert_close(ours.weight_ih.grad, ref.weight_ih.grad)
    accumulated = ours.weight_ih.grad.clone()

    before = _idle()
    grad_hh = ours.weight_hh.grad
    ours.weight_hh.grad = None
    nbytes = grad_hh.untyped_storage().nbytes()
    del grad_hh
    gc.collect()
    assert _idle() - before >= nbytes

    grown = ours.weight_ih.grad.detach()
    grown.resize_(grown.numel() * 3)
    assert_bitwise([grown[: accumulated.numel()]], [accumulated.flatten()], "resized")
    grown[accumulated.numel():] = 1.5  # the grown part is unspecified
    kept = grown.clone()
    grown.share_memory_()
    assert grown.is_shared()
    assert_bitwise([grown], [kept], "moved to shared memory")
    # Last: numpy() makes the storage unresizable, as for any tensor.
    assert_bitwise([torch.from_numpy(grown.numpy().copy())], [kept], "numpy")


def test_threads_train_at_once():
    """Blocks taken and given back from several threads at once: each
    thread's gradients equal the same steps run alone."""
    torch.manual_seed(0)
    template = fusedlstm.LSTMCell(256, 256)
    inputs = [torch.randn(3, 256, generator=torch.Generator().manual_seed(i)) for i in range(4)]

    def train(x):
        cell = fusedlstm.LSTMCell(256, 256)
        cell.load_state_dict(template.state_dict())
        for _ in range(10):
            h, c = cell(x)
            (h.square().sum() + c.sum()).backward()
        return [p.grad.clone() for p in cell.parameters()]

    alone = [train(x) for x in inputs]
    together = [None] * len(inputs)

    def worker(i):
        together[i] = train(inputs[i])

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for i in range(len(inputs)):
        assert_bitwise(together[i], alone[i], f"thread {i}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_fork_while_another_thread_recycles():
    """Children forked while a thread of the parent is taking and giving
    back blocks run the operators and exit (the pool's lock is held across
    fork, so no child starts with it taken)."""
    torch.manual_seed(0)
    cell = fusedlstm.LSTMCell(256, 256)
    x = torch.randn(4, 256)
    with torch.no_grad():
        expected = cell(x)[0].clone()
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            h, c = cell(x.requires_grad_())
            (h.sum() + c.sum()).backward()
            cell.zero_grad(set_to_none=True)

    busy = threading.Thread(target=churn)
    busy.start()
    try:
        for _ in range(6):
            time.sleep(0.01)
            pid = os.fork()
            if pid == 0:  # the child: exit status 0 only if the results match
                status = 1
                try:
                    torch.set_num_threads(1)
                    with torch.no_grad():
                        status = 0 if torch.equal(cell(x)[0], expected) else 2
                finally:
                    os._exit(status)
            deadline = time.monotonic() + 60
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    pytest.fail("a forked child hung")
                time.sleep(0.01)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        busy.join()


def test_profiler_sees_recycled_memory():
    """torch.profiler's memory view counts the recycled tensors as it counts
    at::empty's: the backward of an LSTMCell step at H = 256 allocates its two
    1 MiB weight gradients."""
    cell = fusedlstm.LSTMCell(256, 256)
    x = torch.randn(4, 256, requires_grad=True)
    h, c = cell(x)
    (h.sum() + c.sum()).backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        h, c = cell(x)
        (h.sum() + c.sum()).backward()
    rows = {e.key: e for e in prof.key_averages()}
    assert rows["fusedlstm::lstm_layer_backward"].cpu_memory_usage >= 2 << 20


# Settings of FUSEDLSTM_CPU_RECYCLE_MIB, each in a child process (the cap is
# read once per process).
_STEPS_PRINTING_IDLE = """
import torch, fusedlstm
torch.manual_seed(0)
ops = torch.ops.fusedlstm
print(ops.cpu_recycle_cap_bytes())
for hidden in (256, 512):
    cell = fusedlstm.LSTMCell(hidden, hidden)
    x = torch.randn(4, hidden, requires_grad=True)
    for _ in range(3):
        h, c = cell(x)
        (h.sum() + c.sum()).backward()
        cell.zero_grad(set_to_none=True)
        print(hidden, ops.cpu_recycled_idle_bytes())
"""


def _child(code: str, cap: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FUSEDLSTM_CPU_RECYCLE_MIB=cap)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, cwd=TESTS)


def test_cap_bounds_the_idle_blocks():
    """A 1 MiB cap keeps at most 1 MiB idle: one of H = 256's 1 MiB weight
    gradients, and none of H = 512's 4 MiB ones."""
    done = _child(_STEPS_PRINTING_IDLE, "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert int(lines[0]) == 1 << 20
    idle = [tuple(map(int, line.split())) for line in lines[1:] if line]
    assert [i for _, i in idle if i > 1 << 20] == []
    assert max(i for h, i in idle if h == 256) == 1 << 20


def test_off_keeps_nothing():
    done = _child(_STEPS_PRINTING_IDLE, "0")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.split("\n") if line]
    assert lines[0] == "0"
    assert all(line.split()[1] == "0" for line in lines[1:])


# The "layer_T40_B8_256" config, run in a child with recycling off.
_LAYER_RESULTS = """
import sys, torch
from helpers import make_lstm_pair, run_lstm
_, ours = make_lstm_pair(64, 256)
x = torch.randn(40, 8, 64, generator=torch.Generator().manual_seed(5))
torch.save(run_lstm(ours, x, enforce_sorted=False), sys.argv[1])
"""


def test_same_bits_with_recycling_off(tmp_path):
    """Recycling changes where the tensors live, never a bit of them."""
    out = tmp_path / "off.pt"
    done = subprocess.run([sys.executable, "-c", _LAYER_RESULTS, str(out)], capture_output=True,
                          text=True, timeout=300, cwd=TESTS,
                          env=dict(os.environ, FUSEDLSTM_CPU_RECYCLE_MIB="0"))
    assert done.returncode == 0, done.stderr
    c = CONFIGS["layer_T40_B8_256"]
    _, ours = _modules(c)
    _assert_same_results(_run(ours, c, _input(c)), torch.load(out), "recycling on against off")


def _usable_memory() -> int:
    """The machine's memory, or the cgroup's limit (v2, then v1) where lower."""
    usable = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().split()[0]
        except (OSError, IndexError):
            continue
        if text.isdigit() and 0 < int(text) < usable:
            usable = int(text)
    return usable


@pytest.mark.parametrize("setting", [None, ""], ids=["unset", "empty"])
def test_default_cap_is_a_sixteenth_of_the_memory(setting):
    """Without a setting the cap is 1/16 of the memory the process may use,
    and never below 256 MiB (NOTES change 88)."""
    env = {k: v for k, v in os.environ.items() if k != "FUSEDLSTM_CPU_RECYCLE_MIB"}
    if setting is not None:
        env["FUSEDLSTM_CPU_RECYCLE_MIB"] = setting
    done = subprocess.run(
        [sys.executable, "-c",
         "import torch, fusedlstm; print(torch.ops.fusedlstm.cpu_recycle_cap_bytes())"],
        env=env, capture_output=True, text=True, timeout=300, cwd=TESTS)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == max(256 << 20, _usable_memory() // 16)


@pytest.mark.parametrize("value", ["lots", "-3", "1.5", "12MiB"])
def test_bad_cap_is_an_error(value):
    done = _child("import torch, fusedlstm; torch.ops.fusedlstm.cpu_recycle_cap_bytes()", value)
    assert done.returncode != 0
    assert (f"FUSEDLSTM_CPU_RECYCLE_MIB must be a whole number of MiB, 0 or more, "
            f"got '{value}'") in done.stderr
