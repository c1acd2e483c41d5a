"""scripts/error_paths_smoke.py's native backtrace of a process that dies by
a signal: scripts/native_backtrace.c preloaded into a Python that faults in
native code (ctypes reading address 0), and the frames it writes resolved
by addr2line. The GPU run needs it for the SIGSEGV of NOTES change 64; here
it is checked on a fault of known place. Also the script's reading of a
library's unwind search table, against readelf and a library linked without
one, and its CPU cases, controls included."""
import importlib.util
import shutil
import signal
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "scripts" / "error_paths_smoke.py"
_SPEC = importlib.util.spec_from_file_location("fusedlstm_error_paths_smoke", _PATH)
_TOOL = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_TOOL)

FAULT = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]


@pytest.fixture(scope="module")
def handler(tmp_path_factory):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build scripts/native_backtrace.c")
    library = _TOOL.build_handler(str(tmp_path_factory.mktemp("handler")))
    assert library is not None, "scripts/native_backtrace.c did not build"
    return library


def test_the_handler_writes_the_native_stack_and_dies_by_the_same_signal(handler):
    done = _TOOL.run_with_handler(FAULT, handler, timeout=60)
    assert done.returncode == -signal.SIGSEGV, done.stderr[-2000:]
    assert f"native backtrace: signal {int(signal.SIGSEGV)}" in done.stderr
    frames = _TOOL.resolve_frames(done.stderr)
    # The faulting instruction first, then the calls that led to it: the
    # ctypes module's call is among them.
    assert frames[0].lstrip().startswith("at "), frames
    assert any("_ctypes" in f for f in frames[1:]), "\n".join(frames)


@pytest.mark.skipif(shutil.which("addr2line") is None, reason="no addr2line (binutils) here")
def test_frames_resolve_to_functions(handler):
    done = _TOOL.run_with_handler(FAULT, handler, timeout=60)
    frames = _TOOL.resolve_frames(done.stderr)
    # addr2line names functions that no exported symbol does (ctypes'
    # string_at, the interpreter's evaluation loop), from the symbol table
    # with or without debug lines.
    listing = "\n".join(frames)
    assert "string_at at " in listing or "_PyEval_EvalFrameDefault at " in listing, listing


def test_a_process_without_a_fault_writes_no_frames(handler):
    done = _TOOL.run_with_handler([sys.executable, "-c", "print('fine')"], handler,
                                  timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "fine"
    assert _TOOL.resolve_frames(done.stderr) == []


# --- the unwinder's search table (eh_frame_search_table) and the controls


def _readelf_fde_count(path: str) -> int:
    import subprocess
    done = subprocess.run(["readelf", "--debug-dump=frames", path], capture_output=True,
                          text=True, check=True)
    return sum(1 for line in done.stdout.splitlines() if " FDE " in line)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="no readelf (binutils) here")
def test_search_table_counts_every_function_of_fusedlstms_library():
    import fusedlstm._C as ext
    count = _TOOL.eh_frame_search_table(ext.__file__)
    assert count is not None and count > 100
    assert count == _readelf_fde_count(ext.__file__)


@pytest.fixture
def two_libraries(tmp_path):
    """(with_table, bare): one small C library linked as usual, and again
    with --no-eh-frame-hdr (no PT_GNU_EH_FRAME, so no unwind information
    the unwinder can find)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the two libraries")
    import subprocess
    source = tmp_path / "f.c"
    source.write_text("int f(int x) { return x + 1; }\nint g(int x) { return f(x) * 2; }\n")
    with_table, bare = tmp_path / "with.so", tmp_path / "bare.so"
    for out, flags in ((with_table, []), (bare, ["-Wl,--no-eh-frame-hdr"])):
        subprocess.run([cc, "-shared", "-fPIC", "-O0", "-fasynchronous-unwind-tables",
                        "-o", str(out), str(source)] + flags, check=True)
    return with_table, bare


def test_no_search_table_where_the_linker_left_it_out(two_libraries):
    with_table, bare = two_libraries
    # f and g, and the C runtime's own functions that the linker adds
    assert _TOOL.eh_frame_search_table(str(with_table)) >= 2
    assert _TOOL.eh_frame_search_table(str(bare)) is None


def test_mapped_objects_scan_names_only_those_searched_linearly(two_libraries, tmp_path):
    good, bare = two_libraries
    # The same library with its header's table encoding set to "omitted", as
    # a linker writes it when it cannot parse an object's .eh_frame.
    linear = tmp_path / "linear.so"
    data = bytearray(good.read_bytes())
    data[_TOOL.eh_frame_hdr_offset(str(good)) + 3] = 0xFF
    linear.write_bytes(bytes(data))
    text = tmp_path / "notes.txt"
    text.write_text("not an ELF object")
    maps = "\n".join(f"7f00000{i}000-7f00000{i}fff r-xp 00000000 08:01 {i} {p}"
                     for i, p in enumerate((good, bare, linear, text)))
    maps += "\n7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]\n"
    found = _TOOL.mapped_objects_without_search_table(maps)
    assert found == {str(linear): "a .eh_frame_hdr without a search table"}
    assert _TOOL.eh_frame_search_table(str(linear)) is None
    assert _TOOL.eh_frame_search_table(str(good)) >= 1


@pytest.mark.parametrize("name", ["torch_cpu_error", "torch_cpu_error_fusedlstm_loaded",
                                  "cpu_bad_w_hh", "cpu_bad_w_hh_autograd"])
def test_cpu_cases_raise_their_error(name):
    assert _TOOL.run_one(name) == 0
