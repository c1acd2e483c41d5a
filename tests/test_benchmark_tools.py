"""The A/B tool between two builds (benchmarks/ab_builds.py) runs and reports
every cell it was asked for, on this tree as both builds; it refuses a
directory without a build, and one whose processes would import another."""
import os
import subprocess
import sys
from pathlib import Path

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
