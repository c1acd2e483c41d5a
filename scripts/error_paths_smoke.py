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

Controls: torch's own C++ error (a bad view) on the CPU and on CUDA, with and
without fusedlstm loaded, say whether a crash is the machine's or
fusedlstm's; and the first line says whether fusedlstm's library has the
search table of the unwinder that c10::Error's backtrace capture runs
(eh_frame_search_table).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import struct
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


def _torch_own_error(device, load_fusedlstm):
    """A C++ error of torch's own (c10::Error from a view), with or without
    fusedlstm's library loaded: controls for the cases above. If these die
    too, the crash is the machine's (the unwinder that c10::Error's
    backtrace capture runs, after CUDA's libraries are loaded), not
    fusedlstm's code; if only the cases with fusedlstm loaded die, its
    library's unwind tables are the suspect (see eh_frame_search_table)."""
    if load_fusedlstm:
        import fusedlstm  # noqa: F401
    torch.empty(6, device=device).view(4)


# name -> (needs CUDA, environment, call, a piece of the expected message)
CASES = {
    "torch_cpu_error": (False, {}, lambda: _torch_own_error("cpu", False), "invalid for input"),
    "torch_cuda_error": (True, {}, lambda: _torch_own_error("cuda", False), "invalid for input"),
    "torch_cpu_error_fusedlstm_loaded": (False, {}, lambda: _torch_own_error("cpu", True),
                                         "invalid for input"),
    "torch_cuda_error_fusedlstm_loaded": (True, {}, lambda: _torch_own_error("cuda", True),
                                          "invalid for input"),
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


_PT_GNU_EH_FRAME = 0x6474E550
_NO_UNWIND_INFO = "no PT_GNU_EH_FRAME"


def eh_frame_search_table(path: str) -> int | None:
    """The number of functions in the binary-search table of an ELF64
    object's .eh_frame_hdr (the PT_GNU_EH_FRAME segment, which is what
    libgcc's unwinder reads), or None where it has no such table: no such
    segment (the unwinder finds no frames there and stops), or a header
    whose table the linker left out (it does so, with a warning, when it
    cannot parse an object's .eh_frame). Without the table, the unwinder
    searches the object's FDEs one by one (linear_search_fdes), where a
    malformed FDE faults: the crash that c10::Error's backtrace capture
    meets in pytorch/pytorch#117645."""
    found = _eh_frame_hdr(path)
    return found if isinstance(found, int) else None


class NotElfError(ValueError):
    """A file that is not an ELF object at all (a mapped data file)."""


def eh_frame_hdr_offset(path: str) -> int | None:
    """The file offset of an ELF64 object's PT_GNU_EH_FRAME segment (its
    .eh_frame_hdr), or None where it has none."""
    with open(path, "rb") as f:
        return _eh_frame_hdr_offset_in(f, path)


def _eh_frame_hdr_offset_in(f, path: str) -> int | None:
    # Reads the headers only: CUDA's libraries run to hundreds of MB.
    head = f.read(64)
    if head[:4] != b"\x7fELF":
        raise NotElfError(f"{path}: not an ELF object")
    if head[4] != 2 or head[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 object")
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    f.seek(phoff)
    phdrs = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _, offset = struct.unpack_from("<IIQ", phdrs, i * phentsize)
        if p_type == _PT_GNU_EH_FRAME:
            return offset
    return None


def _eh_frame_hdr(path: str) -> int | str:
    """eh_frame_search_table's count, or a reason there is none."""
    with open(path, "rb") as f:
        offset = _eh_frame_hdr_offset_in(f, path)
        if offset is None:
            return _NO_UNWIND_INFO
        f.seek(offset)
        data = f.read(12)
    version, ptr_enc, count_enc, table_enc = data[0:4]
    omit = 0xFF
    if version != 1 or count_enc == omit or table_enc == omit:
        return "a .eh_frame_hdr without a search table"
    # eh_frame_ptr then fde_count; the linkers write both as 4 bytes
    # (pcrel|sdata4 and udata4), which is all this reads.
    sizes = {0x03: 4, 0x0B: 4, 0x1B: 4}
    if ptr_enc not in sizes or count_enc not in sizes:
        return f".eh_frame_hdr encodings {ptr_enc:#x}, {count_enc:#x} not read here"
    count, = struct.unpack_from("<I", data, 4 + sizes[ptr_enc])
    return count


def _mapped_files(maps: str) -> list[str]:
    """The files mapped in `maps` (the text of /proc/<pid>/maps), each once."""
    files = set()
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            files.add(fields[5].strip())
    return sorted(files)


def mapped_objects_without_search_table(maps: str) -> dict[str, str]:
    """Of the ELF objects in `maps` (the text of /proc/<pid>/maps), those
    that have unwind information but no search table, each with the reason:
    where the unwinder would search linearly. Objects with no unwind
    information at all are left out (the unwinder stops there; no fault)."""
    out = {}
    for path in _mapped_files(maps):
        try:
            found = _eh_frame_hdr(path)
        except NotElfError:
            continue
        except (OSError, ValueError) as e:
            out[path] = f"not read: {e}"
            continue
        if isinstance(found, str) and found != _NO_UNWIND_INFO:
            out[path] = found
    return out


def _report_mapped_objects() -> int:
    """In this process, after CUDA, cuBLAS and cuDNN are loaded (where there
    is a GPU) and fusedlstm is imported: every mapped object whose unwind
    information the unwinder would search linearly."""
    import fusedlstm  # noqa: F401
    if torch.cuda.is_available():
        x = torch.randn(8, 8, device="cuda")
        (x @ x).sum().item()  # cuBLAS
        lstm = torch.nn.LSTM(8, 8).cuda()
        lstm(x.unsqueeze(0))[0].sum().item()  # cuDNN
    with open("/proc/self/maps") as f:
        maps = f.read()
    bad = mapped_objects_without_search_table(maps)
    count = len(_mapped_files(maps))
    where = "with CUDA, cuBLAS and cuDNN loaded" if torch.cuda.is_available() else "(no GPU)"
    if not bad:
        print(f"unwind tables: all {count} mapped files {where} have a search table, "
              "no unwind information, or are not ELF objects")
        return 0
    print(f"unwind tables: {len(bad)} of {count} mapped files {where} have unwind "
          "information the unwinder searches linearly:")
    for path, reason in bad.items():
        print(f"  {path}: {reason}")
    return 0


def _report_unwind_tables() -> None:
    """Whether fusedlstm's library has the unwinder's search table (read
    from the file, without loading it)."""
    spec = importlib.util.find_spec("fusedlstm._C")
    if spec is None or spec.origin is None:
        print("unwind table: fusedlstm._C not found")
        return
    count = eh_frame_search_table(spec.origin)
    if count is None:
        print(f"unwind table: {spec.origin} has NO .eh_frame_hdr search table: the "
              "unwinder searches its FDEs linearly (look for the linker's "
              "'no .eh_frame_hdr table will be created' in the build log)")
    else:
        print(f"unwind table: {Path(spec.origin).name} has a search table of {count} functions")


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
    if argv == ["--mapped-objects"]:
        return _report_mapped_objects()
    if argv:
        return run_one(argv[0])
    _report_unwind_tables()
    # In a child: loading CUDA's libraries must not depend on the cases.
    try:
        done = subprocess.run([sys.executable, __file__, "--mapped-objects"],
                              capture_output=True, text=True, timeout=120)
        sys.stdout.write(done.stdout or f"unwind tables: the scan failed: {done.stderr[-800:]}\n")
    except subprocess.TimeoutExpired:
        print("unwind tables: the scan timed out")
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
