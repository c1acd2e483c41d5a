"""benchmarks/peak_memory.py's reading of the CUDA allocator's trace, on
traces built here in the format of torch.cuda.memory._snapshot()
["device_traces"] (the tool itself needs a GPU): the peak and the blocks
live at it, frees counted when requested, and the frame it names."""
import importlib.util
from pathlib import Path

# Loaded from its file under its own name: the benchmarks' directory is not
# put on sys.path, where its `common` would meet the examples' one.
_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "peak_memory.py"
_SPEC = importlib.util.spec_from_file_location("fusedlstm_bench_peak_memory", _PATH)
_TOOL = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_TOOL)
live_at_peak, report, where = _TOOL.live_at_peak, _TOOL.report, _TOOL.where

MiB = 2 ** 20


def alloc(addr, size, frames=()):
    return {"action": "alloc", "addr": addr, "size": size, "frames": list(frames)}


def free(action, addr, size):
    return {"action": action, "addr": addr, "size": size, "frames": []}


def test_the_peak_and_the_blocks_live_at_it():
    trace = [
        alloc(1, 10 * MiB), alloc(2, 30 * MiB),
        free("free_requested", 1, 10 * MiB), free("free_completed", 1, 10 * MiB),
        alloc(3, 5 * MiB),  # 35 MiB: below the 40 of the first two
        {"action": "segment_alloc", "addr": 9, "size": 64 * MiB, "frames": []},
    ]
    peak, blocks = live_at_peak(trace)
    assert peak == 40 * MiB
    assert [b["addr"] for b in blocks] == [2, 1]  # largest first


def test_a_free_counts_when_requested_or_when_completed_without_a_request():
    requested = [alloc(1, 8), free("free_requested", 1, 8), alloc(2, 4),
                 free("free_completed", 1, 8), alloc(3, 4)]
    assert live_at_peak(requested)[0] == 8  # 8, then 4 + 4
    completed_only = [alloc(1, 8), free("free_completed", 1, 8), alloc(2, 4), alloc(3, 4)]
    assert live_at_peak(completed_only)[0] == 8
    # A block from before the trace: its free changes nothing.
    assert live_at_peak([free("free_requested", 7, 100), alloc(1, 3)])[0] == 3


def test_where_names_the_innermost_frame_outside_torch():
    frames = [{"filename": "/x/site-packages/torch/autograd/graph.py", "line": 5, "name": "run"},
              {"filename": "/repo/fusedlstm/functional.py", "line": 42, "name": "lstm"},
              {"filename": "/repo/benchmarks/implementations.py", "line": 9, "name": "run"}]
    assert where({"frames": frames}) == "functional.py:42 lstm"
    assert where({"frames": frames[:1]}) == "graph.py:5 run"
    assert where({"frames": []}) == "?"
    lines = report("case", [alloc(1, 3 * MiB, frames), alloc(2, MiB)], top=1)
    assert lines[0] == "case: peak 4.0 MiB in 2 blocks"
    assert lines[1].split() == ["3.00", "MiB", "functional.py:42", "lstm"]
    assert lines[2].split()[:2] == ["1.00", "MiB"]
