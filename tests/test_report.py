"""The README's main job, ``python -m fusedlstm.report``: its parity verdicts,
the shapes a user adds with --shape, and its refusal of malformed ones.

Parity only (--no-timing) but for one tiny timed run: the verdicts are what
must hold on any machine."""
from __future__ import annotations

import pytest
import torch

import fusedlstm
from fusedlstm import report


def _run(capsys, *argv):
    code = report.main(["--device", "cpu", *argv])
    return code, capsys.readouterr().out


def _parity_rows(out: str) -> list[str]:
    """The shape names of the parity table's rows."""
    table = out.split("Parity with torch.nn.LSTM")[1].split("\n\n")[0]
    return [line.split()[0] for line in table.splitlines()[3:] if line.strip()]


def test_quick_report_passes_every_parity_check(capsys):
    code, out = _run(capsys, "--quick", "--no-timing")
    assert code == 0, out
    assert _parity_rows(out) == ["S1", "S1", "S2", "S2", "S4", "S4"]
    assert "all parity checks passed" in out


def test_own_shapes_run_alone_or_beside_the_fixed_ones(capsys):
    mine = ["--shape", "T=7,B=3,I=5,H=6,layers=2,bidirectional,batch_first",
            "--shape", "T=9,B=4,I=3,H=5,proj=2,packed=2"]
    code, out = _run(capsys, "--no-timing", "--dtypes", "float32,bfloat16", *mine)
    assert code == 0, out
    assert _parity_rows(out) == ["U1", "U1", "U2", "U2"]
    assert "T=7 B=3 I=5 H=6 L=2 bidir bf" in out and "T<=9 packed B=4 I=3 H=5 P=2" in out
    code, out = _run(capsys, "--no-timing", "--dtypes", "float32", "--shapes", "S3", *mine)
    assert code == 0, out
    assert _parity_rows(out) == ["S3", "U1", "U2"]


def test_parse_shape_reads_every_key():
    case = report.parse_shape(" T=30, B=2,I=4,H=8,layers=3,proj=5,bidirectional,batch_first,"
                              "packed=6", "U1")
    assert (case.name, case.T, case.B, case.I, case.H) == ("U1", 30, 2, 4, 8)
    assert (case.layers, case.proj_size, case.bidirectional, case.batch_first) == (3, 5, True,
                                                                                    True)
    assert case.packed == (6, 30)
    assert report.parse_shape("T=5,B=1,I=1,H=1,packed", "U2").packed == (1, 5)
    assert report.parse_shape("T=5,B=1,I=1,H=1", "U3").packed is None


@pytest.mark.parametrize("spec,message", [
    ("T=7,B=3,I=5", "lacks H"),
    ("T=7,B=3,I=5,H=6,depth=2", "unknown key 'depth'"),
    ("T=7,B=3,I=5,H=6,T=8", "'T' given twice"),
    ("T=0,B=3,I=5,H=6", "T=0 .* must be at least 1"),
    ("T=5,B=3,I=5,H=6,layers=0", "layers=0 .* must be at least 1"),
    ("T=5,B=3,I=5,H=6,proj=6", r"proj=6 .* must be in \[0, H\)"),
    ("T=5,B=3,I=5,H=6,packed=9", r"packed=9 .* in \[1, T\]"),
    ("T=5,B=x,I=5,H=6", "B='x' .* not an integer"),
    ("T=5,B=3,I=5,H=6,bidirectional=1", "bidirectional .* is a flag"),
])
def test_malformed_shapes_are_refused_with_the_reason(capsys, spec, message):
    with pytest.raises(ValueError, match=message):
        report.parse_shape(spec, "U1")
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--device", "cpu", "--no-timing", "--shape", spec])
    assert exit_info.value.code == 2
    assert "error: " in capsys.readouterr().err


class _OffBy005(fusedlstm.LSTM):
    """A module whose output is wrong by 0.05: what the verdicts must catch."""

    def forward(self, input, hx=None):
        output, state = super().forward(input, hx)
        return output + 0.05, state


def test_a_wrong_module_fails_the_report(capsys, monkeypatch):
    monkeypatch.setattr(fusedlstm, "LSTM", _OffBy005)
    code, out = _run(capsys, "--no-timing", "--shape", "T=6,B=3,I=4,H=5")
    assert code == 1
    verdicts = [line for line in out.splitlines() if line.startswith("U1 ")][:2]
    assert len(verdicts) == 2 and all("FAIL" in v for v in verdicts), out
    assert "2 check(s) FAILED" in out


def test_timed_report_prints_both_times_and_their_ratio(capsys):
    code, out = _run(capsys, "--dtypes", "float32", "--shape", "T=4,B=2,I=3,H=4",
                     "--time-limit", "1", "--min-reps", "1", "--max-reps", "2")
    assert code == 0, out
    speed = out.split("Speed on cpu")[1].splitlines()
    row = next(line for line in speed if line.startswith("U1 ")).split()
    # ... dtype, then forward and forward+backward: fused, nn, ratio; then runs
    assert row[-8] == "float32"
    # Each printed to two decimals: the ratio within what those roundings allow.
    for fused, nn_time, ratio in ((float(v) for v in row[-7:-4]),
                                  (float(v) for v in row[-4:-1])):
        assert fused > 0 and nn_time > 0
        half = 0.005
        assert ((fused - half) / (nn_time + half) - half <= ratio
                <= (fused + half) / (nn_time - half) + half), (fused, nn_time, ratio)
