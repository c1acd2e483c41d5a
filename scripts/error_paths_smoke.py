"""Raises each kind of RuntimeError that fusedlstm's C++ operators throw, one
case per child process, and says which ones the process survives.

    python scripts/error_paths_smoke.py            # every case; exit 1 if any fails
    python scripts/error_paths_smoke.py CASE       # one case, in this process

Why: on the first lent H200 (torch 2.11.0+cu130, extension built by GCC 13),
pytest died with SIGSEGV at the first test that expects the CUDA operator to
raise (FUSEDLSTM_CUDA_PATH=persistent on float64, and =cluster on float32
without TF32), while the same errors raise cleanly on the CPU builds that CI
runs. Each case here runs in a fresh interpreter, so one crash does not hide
the others, and the first case that dies by a signal is run again twice for
its native backtrace: with scripts/native_backtrace.c preloaded (built with
the machine's C compiler; each frame's object and offset, resolved to
function and line by addr2line where binutils is installed), and under
cuda-gdb where it is installed. CPU cases need no GPU; CUDA cases are left
out without one.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def _layer_args(device, dtype, H=24, I=10, B=5, T=7, bad_w_hh=False, grad=False):
    g = torch.Generator().manual_seed(0)

    def u(*shape):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * 0.2 - 0.1).to(
            device=device, dtype=dtype).requires_grad_(grad)

    w_hh = u(4 * H, H + 1) if bad_w_hh else u(4 * H, H)
    return [u(T, B, I), u(B, H), u(B, H), u(4 * H, I), w_hh, u(4 * H), u(4 * H), None,
            None, False]


def _forward(args):
    import fusedlstm  # noqa: F401  (registers torch.ops.fusedlstm)
    torch.ops.fusedlstm.lstm_layer_forward(*args)


# name -> (needs CUDA, environment, call, a piece of the expected message)
CASES = {
    "cpu_bad_w_hh": (False, {}, lambda: _forward(
        _layer_args("cpu", torch.float32, bad_w_hh=True)), "w_hh"),
    "cuda_bad_w_hh": (True, {}, lambda: _forward(
        _layer_args("cuda", torch.float32, bad_w_hh=True)), "w_hh"),
    "cuda_unknown_path": (True, {"FUSEDLSTM_CUDA_PATH": "bogus"}, lambda: _forward(
        _layer_args("cuda", torch.float32)), "FUSEDLSTM_CUDA_PATH must be"),
    "cuda_persistent_float64": (True, {"FUSEDLSTM_CUDA_PATH": "persistent"}, lambda: _forward(
        _layer_args("cuda", torch.float64)), "float64 has no persistent kernel"),
    "cuda_persistent_too_large": (True, {"FUSEDLSTM_CUDA_PATH": "persistent"}, lambda: _forward(
        _layer_args("cuda", torch.float16, H=4096, I=4, B=2, T=2)), "persistent"),
    "cuda_cluster_float32": (True, {"FUSEDLSTM_CUDA_PATH": "cluster"}, lambda: _forward(
        _layer_args("cuda", torch.float32)), "tensor cores"),
    # The same errors from inside the operator's C++ autograd kernel
    # (csrc/autograd.cpp), which inputs that require grad go through.
    "cpu_bad_w_hh_autograd": (False, {}, lambda: _forward(
        _layer_args("cpu", torch.float32, bad_w_hh=True, grad=True)), "w_hh"),
    "cuda_persistent_float64_autograd": (True, {"FUSEDLSTM_CUDA_PATH": "persistent"},
                                         lambda: _forward(_layer_args(
                                             "cuda", torch.float64, grad=True)),
                                         "float64 has no persistent kernel"),
}


def run_one(name: str) -> int:
    _, env, call, expected = CASES[name]
    os.environ.update(env)
    torch.backends.cudnn.allow_tf32 = False  # the cluster case needs TF32 off
    try:
        call()
    except RuntimeError as e:
        if expected in str(e):
            print(f"ok   {name}: RuntimeError ({str(e)[:120]})")
            return 0
        print(f"FAIL {name}: RuntimeError without {expected!r}: {e}")
        return 1
    print(f"FAIL {name}: nothing raised")
    return 1


HANDLER_SOURCE = Path(__file__).resolve().parent / "native_backtrace.c"
# A frame as native_backtrace.c writes it: "  #3 /path/lib.so+0x1a2b (symbol)";
# "at" for the faulting instruction itself.
_FRAME = re.compile(r"^\s+(#\d+|at) (\S+)\+0x([0-9a-f]+) \((.*)\)$", re.MULTILINE)


def build_handler(directory: str) -> str | None:
    """native_backtrace.c built as a preloadable library in `directory`, or
    None (with the reason printed) where there is no C compiler or it fails."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("(no C compiler here: no preloaded backtrace)")
        return None
    library = os.path.join(directory, "native_backtrace.so")
    built = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", library,
                            str(HANDLER_SOURCE), "-ldl"], capture_output=True, text=True)
    if built.returncode != 0:
        print(f"(building the backtrace handler failed: {built.stderr[-500:]})")
        return None
    return library


def resolve_frames(text: str) -> list[str]:
    """Each frame native_backtrace.c wrote in `text`, with the function and
    source line addr2line finds for it (one addr2line call an object). A
    frame below the first is a return address: the call is the byte before."""
    # (label, object, offset, symbol, the offset addr2line is asked about)
    frames = []
    for m in _FRAME.finditer(text):
        offset = int(m.group(3), 16)
        at = offset if m.group(1) == "at" else max(offset - 1, 0)
        frames.append((m.group(1), m.group(2), offset, m.group(4), at))
    addr2line = shutil.which("addr2line")
    found: dict[tuple[str, int], str] = {}
    if addr2line is not None:
        wanted: dict[str, list[int]] = {}
        for _, obj, _, _, at in frames:
            wanted.setdefault(obj, []).append(at)
        for obj, offsets in wanted.items():
            if not os.path.exists(obj):
                continue
            done = subprocess.run([addr2line, "-f", "-C", "-e", obj] + [hex(o) for o in offsets],
                                  capture_output=True, text=True)
            lines = done.stdout.splitlines()
            for i, at in enumerate(offsets):
                if 2 * i + 1 < len(lines):
                    found[(obj, at)] = f"{lines[2 * i]} at {lines[2 * i + 1]}"
    out = []
    for label, obj, offset, symbol, at in frames:
        out.append(f"{label:>4} {Path(obj).name}+{offset:#x}: {found.get((obj, at), symbol)}")
    return out


def run_with_handler(args: list[str], library: str, timeout: float = 120):
    """Runs `args` with the handler preloaded; returns the finished process."""
    env = dict(os.environ, LD_PRELOAD=library)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def _preloaded_backtrace(name: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        library = build_handler(directory)
        if library is None:
            return
        print(f"$ LD_PRELOAD=native_backtrace.so {sys.executable} {__file__} {name}", flush=True)
        try:
            done = run_with_handler([sys.executable, __file__, name], library)
        except subprocess.TimeoutExpired:
            print("(timed out)")
            return
        sys.stdout.write(done.stdout)
        frames = resolve_frames(done.stderr)
        if not frames:
            print(f"(exit {done.returncode}, no native frames; stderr tail:\n"
                  f"{done.stderr[-1500:]})")
        print("\n".join(frames))


def _native_backtrace(name: str) -> None:
    gdb = shutil.which("cuda-gdb") or ("/usr/local/cuda/bin/cuda-gdb"
                                       if os.path.exists("/usr/local/cuda/bin/cuda-gdb") else None)
    if gdb is None:
        print("(no cuda-gdb here: no native backtrace)")
        return
    cmd = [gdb, "-q", "-batch", "-ex", "set pagination off", "-ex", "run", "-ex", "bt 40",
           "-ex", "info registers rip", "--args", sys.executable, __file__, name]
    print("$ " + " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, timeout=100)
    except subprocess.TimeoutExpired:
        print("(cuda-gdb timed out)")


def main(argv) -> int:
    if argv:
        return run_one(argv[0])
    has_cuda = torch.cuda.is_available()
    failed, crashed = [], []
    for name, (needs_cuda, _, _, _) in CASES.items():
        if needs_cuda and not has_cuda:
            print(f"skip {name}: no CUDA device")
            continue
        done = subprocess.run([sys.executable, __file__, name], capture_output=True,
                              text=True, timeout=120)
        sys.stdout.write(done.stdout)
        if done.returncode < 0:
            print(f"DIED {name}: signal {-done.returncode}; stderr tail:\n{done.stderr[-1500:]}")
            crashed.append(name)
        elif done.returncode != 0:
            failed.append(name)
    if crashed:
        _preloaded_backtrace(crashed[0])
        _native_backtrace(crashed[0])
    print(f"{len(CASES) - len(failed) - len(crashed)} ok or skipped, {len(failed)} failed, "
          f"{len(crashed)} died: {crashed}")
    return 1 if failed or crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
