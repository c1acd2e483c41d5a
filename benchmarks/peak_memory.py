#!/usr/bin/env python
"""What is alive on the GPU at the peak of one training step: fusedlstm and
cuDNN side by side on a grid shape, from the CUDA caching allocator's own
trace (torch.cuda.memory._record_memory_history).

    python benchmarks/peak_memory.py                      # G7, bfloat16, training
    python benchmarks/peak_memory.py --subset G1,G7 --dtype float32 --out DIR

The grid's peak_mib column (bench_gpu.py) says how much; this says what:
the blocks live at the peak of one warmed-up step, largest first, each with
the innermost Python frame that allocated it, so the peak can be compared
with what the step must keep (issue 5's memory target: peak training memory
no more than cuDNN's). Writes peak_memory.txt under --out when given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

# The benchmark modules are imported where the GPU work starts, so that the
# trace reading below imports without them (tests/test_peak_memory_tool.py,
# where another `common` module may be loaded already).
_HERE = str(Path(__file__).resolve().parent)


def _benchmark_modules():
    if _HERE not in sys.path:
        sys.path.insert(0, _HERE)
    import common
    import implementations
    return common, implementations


def live_at_peak(trace: list[dict]) -> tuple[int, list[dict]]:
    """The allocator trace's peak of allocated bytes and the blocks live then.

    `trace` is one device's list from torch.cuda.memory._snapshot()
    ["device_traces"]: entries with "action" ("alloc", "free_requested",
    "free_completed", segment actions, ...), "addr", "size" and "frames". A
    block counts from its "alloc" until its "free_requested" (when
    memory_allocated() drops), or its "free_completed" where the trace has no
    request for it. Blocks allocated before the trace began are not in it.
    """
    requested = {(e["addr"], e["size"]) for e in trace if e["action"] == "free_requested"}
    live: dict[int, dict] = {}
    total = peak = 0
    at_peak: list[dict] = []
    for e in trace:
        action = e["action"]
        if action == "alloc":
            live[e["addr"]] = e
            total += e["size"]
            if total > peak:
                peak, at_peak = total, list(live.values())
        elif action == "free_requested" or (
                action == "free_completed" and (e["addr"], e["size"]) not in requested):
            if live.pop(e["addr"], None) is not None:
                total -= e["size"]
    return peak, sorted(at_peak, key=lambda e: -e["size"])


def where(entry: dict) -> str:
    """The innermost frame outside torch's own Python files, else the innermost."""
    frames = entry.get("frames") or []
    for f in frames:
        name = f.get("filename", "")
        if "/torch/" not in name and "<" not in name:
            return f"{Path(name).name}:{f.get('line')} {f.get('name')}"
    if frames:
        f = frames[0]
        return f"{Path(f.get('filename', '?')).name}:{f.get('line')} {f.get('name')}"
    return "?"


def report(name: str, trace: list[dict], top: int) -> list[str]:
    peak, blocks = live_at_peak(trace)
    lines = [f"{name}: peak {peak / 2**20:.1f} MiB in {len(blocks)} blocks"]
    for e in blocks[:top]:
        lines.append(f"  {e['size'] / 2**20:9.2f} MiB  {where(e)}")
    rest = sum(e["size"] for e in blocks[top:])
    if rest:
        lines.append(f"  {rest / 2**20:9.2f} MiB  in {len(blocks) - top} smaller blocks")
    return lines


def measure(shape, dtype_name: str, impl_name: str, top: int) -> list[str]:
    common, implementations = _benchmark_modules()
    dtype = common.DTYPES[dtype_name]
    inputs = implementations.make_inputs(shape, dtype, "cuda", 1)
    impl = implementations.build_impls(shape, dtype, "cuda", [impl_name])[impl_name]
    if isinstance(impl, Exception):
        return [f"{impl_name}: {type(impl).__name__}: {impl}"]
    impl.setup("training", inputs)
    impl.run(0)  # warm: workspaces and cached blocks exist before the trace
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=200000, stacks="python")
    try:
        impl.run(0)
        torch.cuda.synchronize()
        trace = torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()]
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
        impl.teardown()
    return report(f"{shape.id} {dtype_name} training {impl_name}", trace, top)


def main(argv=None) -> int:
    common, _ = _benchmark_modules()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", default="G7", help="grid shape ids, comma-separated")
    p.add_argument("--dtype", default="bfloat16", choices=list(common.DTYPES))
    p.add_argument("--impls", default="fusedlstm,cudnn")
    p.add_argument("--top", type=int, default=12, help="blocks listed per implementation")
    p.add_argument("--out", default=None, help="directory for peak_memory.txt")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("peak_memory.py: no CUDA device is available; nothing to do.", file=sys.stderr)
        return 2
    meta = common.metadata("cuda")
    lines = [f"{meta['gpu']} | torch {meta['torch']} cuda {meta['cuda']} cudnn {meta['cudnn']}"
             f" | commit {meta['commit']}"]
    for shape in common.select(args.subset, common.GPU_GRID):
        for name in args.impls.split(","):
            lines += measure(shape, args.dtype, name.strip(), args.top)
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "peak_memory.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
