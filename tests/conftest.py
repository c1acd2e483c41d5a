"""pytest configuration of the CPU parity suite (helpers live in helpers.py)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

try:
    from hypothesis import settings

    # Reproducible in CI: the same examples on every run, no timing deadline
    # (the machines are shared and slow).
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


# One intra-op thread by default. The suite's shapes are tiny, and on a shared,
# oversubscribed 2-core machine every OpenMP parallel region of a 2-thread
# run waits for a descheduled thread (~10 ms a step, both for nn.LSTM and for
# us), which makes the suite 100x slower without testing anything more. The
# multi-threaded paths are exercised by the tests that ask for ``two_threads``.
torch.set_num_threads(1)


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """The test once at one thread and once at two (its value)."""
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def directions_spy(monkeypatch):
    """The devices of the calls that ran a bidirectional layer's directions
    on two streams (fusedlstm/_directions.py), in order."""
    from fusedlstm import _directions

    calls = []
    real = _directions.forward_and_reverse

    def counting(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(_directions, "forward_and_reverse", counting)
    return calls
