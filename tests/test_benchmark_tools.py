"""The A/B tool between two builds (benchmarks/ab_builds.py) runs and reports
every cell it was asked for, on this tree as both builds; it refuses a
directory without a build, and one whose processes would import another."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "benchmarks" / "ab_builds.py"


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_ab_builds_reports_each_cell_of_this_tree_against_itself():
    done = _run("--baseline", str(ROOT), "--candidate", str(ROOT), "--shapes", "C1",
                "--modes", "inference,training", "--processes", "1", "--reps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split(":")[0].strip(): line for line in done.stdout.splitlines()
             if "candidate / baseline" in line}
    assert set(lines) == {"C1 inference", "C1 training"}, done.stdout
    for line in lines.values():
        ratio = float(line.rsplit(" ", 1)[1])
        assert 0.0 < ratio < float("inf")


def test_ab_builds_refuses_a_directory_without_a_build(tmp_path):
    done = _run("--baseline", str(tmp_path))
    assert done.returncode != 0
    assert f"--baseline {tmp_path}: no fusedlstm package there" in done.stderr


def test_ab_builds_refuses_a_build_its_processes_do_not_import(tmp_path):
    # A package directory with nothing in it imports as an empty namespace:
    # the tool must say that the build it was given is not what ran.
    (tmp_path / "fusedlstm").mkdir()
    done = _run("--baseline", str(tmp_path), "--shapes", "C1", "--modes", "inference",
                "--processes", "1", "--reps", "1")
    assert done.returncode != 0
    assert "not this build" in done.stderr, done.stderr[-2000:]


PROFILE = ROOT / "benchmarks" / "profile_step.py"


def test_profile_step_runs_each_cell_it_is_given_on_the_cpu():
    """gpu_check.sh's ncu step runs benchmarks/profile_step.py under ncu;
    here its calls run on the CPU operators, one line per cell."""
    done = subprocess.run([sys.executable, str(PROFILE), "G4:float32:inference",
                           "G4:float32:training", "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["G4 float32 inference",
                                                      "G4 float32 training"], done.stdout
    for line in lines:
        assert float(line.split(":")[1].split()[0]) > 0.0, line


def test_profile_step_refuses_a_malformed_cell():
    for cell, message in [("G3:bfloat:inference", "'bfloat' is not a torch dtype"),
                          ("G10:float32:inference", "unknown shape"),
                          ("G3:float32:eval", "mode must be one of"),
                          ("G3:float32", "expected SHAPE:DTYPE:MODE")]:
        done = subprocess.run([sys.executable, str(PROFILE), cell, "--device", "cpu"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, (cell, done.stderr)


CELL_BENCH = ROOT / "benchmarks" / "bench_cpu_cell.py"


def test_bench_cpu_cell_times_both_cells_in_each_dtype(tmp_path):
    """The README's LSTMCell figures: every (shape, threads, mode) row, a
    positive time for each side and their ratio, in float32 and bfloat16."""
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.csv"
        done = subprocess.run([sys.executable, str(CELL_BENCH), "--shapes", "D1,D6",
                               "--threads", "1", "--reps", "3", "--dtype", dtype,
                               "--csv", str(out)], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.startswith(dtype), done.stdout[:200]
        rows = out.read_text().splitlines()
        assert rows[0].split(",") == ["shape", "hidden", "batch", "threads", "mode",
                                      "fusedlstm_us", "nn_us", "ratio"]
        cells = [row.split(",") for row in rows[1:]]
        assert [(c[0], c[4]) for c in cells] == [
            ("D1", "inference"), ("D1", "training"), ("D6", "inference"), ("D6", "training")]
        for c in cells:
            ours, ref, ratio = float(c[5]), float(c[6]), float(c[7])
            assert ours > 0 and ref > 0
            assert abs(ratio - ours / ref) <= 0.01 + 0.01 * ratio, c


def test_bench_cpu_cell_evicts_before_each_call_when_asked(tmp_path):
    """--evict-mib: the header says so and every row is still timed; a
    negative size is refused by the parser."""
    out = tmp_path / "evict.csv"
    done = subprocess.run([sys.executable, str(CELL_BENCH), "--shapes", "D1", "--threads", "1",
                           "--reps", "3", "--evict-mib", "8", "--csv", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "8 MiB written before each call" in done.stdout.splitlines()[0], done.stdout[:300]
    cells = [row.split(",") for row in out.read_text().splitlines()[1:]]
    assert [(c[0], c[4]) for c in cells] == [("D1", "inference"), ("D1", "training")]
    assert all(float(c[5]) > 0 and float(c[6]) > 0 for c in cells)
    bad = subprocess.run([sys.executable, str(CELL_BENCH), "--evict-mib", "-1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--evict-mib must be 0 or more" in bad.stderr, bad.stderr


BIDIRECTIONAL_BENCH = ROOT / "benchmarks" / "bench_cpu_bidirectional.py"


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_bench_cpu_bidirectional_times_three_sides_and_says_which_ran_at_once(tmp_path, mode):
    """The README's bidirectional figures: a row per (shape, threads), three
    positive times, their ratios, and the directions at once only at two
    threads (as FUSEDLSTM_CPU_DIRECTIONS=auto rules)."""
    out = tmp_path / "bi.csv"
    done = subprocess.run([sys.executable, str(BIDIRECTIONAL_BENCH), "--shapes", "E2",
                           "--threads", "1,2", "--reps", "3", "--mode", mode,
                           "--csv", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "FUSEDLSTM_CPU_DIRECTIONS": "sequential"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = out.read_text().splitlines()
    assert rows[0].split(",") == ["mode", "dtype", "shape", "T", "batch", "input", "hidden",
                                  "layers", "threads", "concurrent", "at_once_ms",
                                  "in_turn_ms", "nn_ms", "at_once_over_in_turn",
                                  "at_once_over_nn"]
    cells = [row.split(",") for row in rows[1:]]
    assert [(c[0], c[1], c[2], c[8], c[9]) for c in cells] == [
        (mode, "float32", "E2", "1", "False"), (mode, "float32", "E2", "2", "True")]
    for c in cells:
        at_once, in_turn, ref = map(float, c[10:13])
        assert min(at_once, in_turn, ref) > 0
        assert abs(float(c[13]) - at_once / in_turn) <= 0.002 + 0.01 * at_once / in_turn, c
        assert abs(float(c[14]) - at_once / ref) <= 0.002 + 0.01 * at_once / ref, c
    bad = subprocess.run([sys.executable, str(BIDIRECTIONAL_BENCH), "--shapes", "E9"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown shapes ['E9']" in bad.stderr, bad.stderr


DECODER_BENCH = ROOT / "benchmarks" / "bench_cpu_decoder.py"


def test_bench_cpu_decoder_times_each_loop_in_its_own_processes(tmp_path):
    """Every (shape, threads) row: each side's median time an iteration over
    its processes, their ratio, and each side's page faults an iteration."""
    out = tmp_path / "decoder.csv"
    done = subprocess.run([sys.executable, str(DECODER_BENCH), "--shapes", "D1,D6",
                           "--threads", "1", "--steps", "2", "--iters", "2", "--warmup", "1",
                           "--rounds", "1", "--dtype", "bfloat16", "--csv", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("bfloat16") and "1 processes a side" in done.stdout
    rows = out.read_text().splitlines()
    assert rows[0].split(",") == ["shape", "hidden", "batch", "threads", "dtype", "steps",
                                  "fusedlstm_ms", "nn_ms", "ratio", "fusedlstm_faults",
                                  "nn_faults"]
    cells = [row.split(",") for row in rows[1:]]
    assert [(c[0], c[1], c[2], c[5]) for c in cells] == [("D1", "64", "1", "2"),
                                                         ("D6", "128", "8", "2")]
    for c in cells:
        ours, ref, ratio = float(c[6]), float(c[7]), float(c[8])
        assert ours > 0 and ref > 0
        assert abs(ratio - ours / ref) <= 0.01 + 0.01 * ratio, c
        assert float(c[9]) >= 0 and float(c[10]) >= 0


@pytest.mark.parametrize("args, message", [
    (["--shapes", "D9"], "unknown shape(s) D9"),
    (["--iters", "0"], "--iters must be 1 or more"),
    (["--rounds", "0"], "--rounds must be 1 or more"),
])
def test_bench_cpu_decoder_refuses_bad_arguments(args, message):
    bad = subprocess.run([sys.executable, str(DECODER_BENCH), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_decoder_loop_counts_the_page_faults_of_its_iterations(monkeypatch):
    """The faults column is the loop's own: an iteration that writes a fresh
    16 MiB mapping each time reports at least its 4 KiB pages."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_cpu_decoder
    import mmap

    def fresh_pages():
        m = mmap.mmap(-1, 16 << 20)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):  # else THP "always" would fault 2 MiB at a time
            m.madvise(mmap.MADV_NOHUGEPAGE)
        for offset in range(0, 16 << 20, 4096):
            m[offset] = 1
        m.close()

    class FaultingSGD(torch.optim.SGD):
        def step(self, *a, **k):
            fresh_pages()
            return super().step(*a, **k)

    threads = torch.get_num_threads()  # run_loop sets its own
    try:
        plain = bench_cpu_decoder.run_loop("nn.LSTMCell", 16, 2, 1, "float32", 2, 3, 1)
        monkeypatch.setattr(torch.optim, "SGD", FaultingSGD)
        faulting = bench_cpu_decoder.run_loop("nn.LSTMCell", 16, 2, 1, "float32", 2, 3, 1)
    finally:
        torch.set_num_threads(threads)
    # Each iteration's planted pages are all counted, and they are what sets
    # the two apart (the plain loop's own faults come and go by a page or so).
    planted = (16 << 20) // 4096
    assert faulting["faults"] >= planted and plain["faults"] < planted / 2, (faulting, plain)
    assert faulting["ms"] > 0 and plain["ms"] > 0


def test_time_cpu_interleaved_runs_before_each_outside_the_timed_calls():
    """before_each runs once before every timed call (not the warm-up), and
    its time is not counted: a 30 ms hook around 1 ms calls."""
    code = r"""
import sys, time
sys.path.insert(0, "benchmarks")
import common
log = []
def hook():
    log.append("hook"); time.sleep(0.03)
def run_of(name):
    def run(i):
        log.append(name); time.sleep(0.001)
    return run
t = common.time_cpu_interleaved({"a": run_of("a"), "b": run_of("b")}, 2, warmup=2, reps=4,
                                before_each=hook)
timed = log[4:]
assert timed == ["hook", "a", "hook", "b", "hook", "b", "hook", "a"] * 2, timed
assert all(v.median_ms < 20 for v in t.values()), {k: v.median_ms for k, v in t.items()}
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_every_gpu_implementation_listed_has_a_maker():
    """bench_gpu.py's --impls names reach implementations.build_impls, which
    records a failed construction as the row's error: a name without a maker
    would become an error row instead of a measurement. On the CPU the eager
    ones build, and the graph-replayed ones fail for want of CUDA, not of a
    maker; fusedlstm_cluster_whole sets both of its variables and restores
    them."""
    code = r"""
import os, sys
sys.path.insert(0, "benchmarks")
import torch
import bench_gpu, common, implementations
shape = next(s for s in common.GPU_GRID if s.id == "G3")
names = [n for n in bench_gpu.ALL_IMPLS if n != "flashrnn"]
built = implementations.build_impls(shape, torch.float32, "cpu", names)
for name in names:
    v = built[name]
    print(name, "error" if isinstance(v, Exception) else "built",
          type(v).__name__ if isinstance(v, Exception) else "")
os.environ["FUSEDLSTM_CLUSTER_SYNC"] = "split"
os.environ.pop("FUSEDLSTM_CUDA_PATH", None)
with implementations._environments(FUSEDLSTM_CUDA_PATH="cluster",
                                   FUSEDLSTM_CLUSTER_SYNC="whole"):
    print("inside", os.environ["FUSEDLSTM_CUDA_PATH"], os.environ["FUSEDLSTM_CLUSTER_SYNC"])
print("after", os.environ.get("FUSEDLSTM_CUDA_PATH"), os.environ["FUSEDLSTM_CLUSTER_SYNC"])
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    for name in ("fusedlstm", "fusedlstm_cluster", "fusedlstm_cluster_whole",
                 "fusedlstm_persistent", "fusedlstm_stepwise", "cudnn", "native"):
        assert rows[name].startswith("built"), (name, rows[name])
    for name, row in rows.items():
        assert "KeyError" not in row, (name, row)
    assert rows["inside"] == "cluster whole"
    assert rows["after"] == "None split"
