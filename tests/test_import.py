"""What ``import fusedlstm`` loads, and that the shortcut which keeps it
light marks functions for TorchDynamo as torch's decorator does.

torch.compiler.assume_constant_result imports TorchDynamo (about as long as
importing torch) only to set an attribute; fusedlstm marks its oneDNN switch
at import time, so it sets the attribute itself where TorchDynamo is not
loaded (fusedlstm/_tracing.py). Each check runs in a fresh interpreter: the
test process has TorchDynamo loaded long before these tests run.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

_FRESH_PROCESS = r"""
import json, sys
import torch
import fusedlstm
from fusedlstm import _state_dtypes, _tracing

report = {"dynamo_loaded_by_import": "torch._dynamo" in sys.modules}

def ours():
    return 1

marked = _tracing.assume_constant_result(ours)
report["returns_same_function"] = marked is ours
report["ours"] = sorted(vars(ours).items())

def official():
    return 1

torch.compiler.assume_constant_result(official)
report["official"] = sorted(vars(official).items())

# The switch marked at import compiles without a graph break: TorchDynamo
# cannot trace torch.backends.mkldnn, so an unmarked switch fails here.
def read_switch(x):
    return x + 1 if _state_dtypes._onednn_enabled() else x - 1

x = torch.zeros(3)
compiled = torch.compile(read_switch, fullgraph=True, backend="eager")(x)
report["compiled_equals_eager"] = bool(torch.equal(compiled, read_switch(x)))
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def fresh_process_report():
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_does_not_load_dynamo(fresh_process_report):
    assert fresh_process_report["dynamo_loaded_by_import"] is False


def test_constant_mark_matches_torch_decorator(fresh_process_report):
    assert fresh_process_report["returns_same_function"] is True
    assert fresh_process_report["ours"], "the shortcut set no attribute"
    assert fresh_process_report["ours"] == fresh_process_report["official"]


def test_marked_switch_compiles_without_graph_break(fresh_process_report):
    assert fresh_process_report["compiled_equals_eager"] is True


@pytest.mark.parametrize("error", [ValueError, TypeError, NotImplementedError])
@pytest.mark.parametrize("probe", ["cell_state_dims", "onednn_equal_packed"])
def test_import_time_probes_survive_another_error_type(monkeypatch, probe, error):
    """The import asks torch's operators how they behave; an error of a type
    this torch does not raise there (a later torch may raise ValueError where
    this one raises RuntimeError) answers "no", as an unrecognised message
    does, instead of making `import fusedlstm` fail."""
    import torch

    from fusedlstm import _state_dtypes, modules

    function, operator = {
        "cell_state_dims": (modules._lstm_cell_checks_state_dims, "lstm_cell"),
        "onednn_equal_packed": (_state_dtypes._onednn_takes_equal_packed, "lstm"),
    }[probe]

    def raising(*args, **kwargs):
        raise error("a message this probe does not know")

    monkeypatch.setattr(torch, operator, raising)
    assert function() is False
