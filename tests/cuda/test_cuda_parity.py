"""GPU parity of the fusedlstm CUDA kernels.

Runs every test on both recurrence paths (FUSEDLSTM_CUDA_PATH=stepwise and
=persistent; the C++ reads the variable on every call) against a float64
CPU reference written here, and the module against torch.nn.LSTM (cuDNN).
Half-precision rule: our error against float64 is at most 2x cuDNN's own
error at the same dtype, plus a small atol. Skipped, with the reason shown,
where CUDA is absent.
"""
import pytest
import torch

from helpers import assert_bitwise

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

try:  # loads fusedlstm._C, which registers torch.ops.fusedlstm
    import fusedlstm
except ImportError:  # pragma: no cover - the build is broken; say so loudly
    fusedlstm = None

DEV = "cuda"
PATHS = ["stepwise", "persistent"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# Relative tolerance against the float64 reference, scaled by the largest
# reference magnitude (values, then gradients).
TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (2e-5, 1e-4),
       torch.float16: (4e-3, 1e-2), torch.bfloat16: (3e-2, 6e-2)}
# atol of the half-precision rule, per dtype.
HALF_ATOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", request.param)
    return request.param


def _ops():
    if fusedlstm is None:
        pytest.fail("import fusedlstm failed: the extension is not built")
    return torch.ops.fusedlstm


def close(actual, ref, tol, what=""):
    ref = ref.to(actual.device, torch.float64)
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(actual.double(), ref, rtol=tol, atol=tol * scale,
                               msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------
# One layer-direction: the operators against a float64 reference.

def make_case(dtype, I=10, H=24, P=0, B=5, T=7, bias=True, packed=False,
              seed=0):
    g = torch.Generator().manual_seed(seed)
    S = P or H
    k = H ** -0.5

    def u(*shape):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * k).to(dtype)

    case = dict(w_ih=u(4 * H, I), w_hh=u(4 * H, S),
                b_ih=u(4 * H) if bias else None, b_hh=u(4 * H) if bias else None,
                w_hr=u(P, H) if P else None, h0=u(B, S) * 4, c0=u(B, H) * 4)
    if packed:
        lengths = sorted(torch.randint(1, T + 1, (B,), generator=g).tolist(),
                         reverse=True)
        lengths[0] = T
        bs = [sum(1 for n in lengths if n > t) for t in range(T)]
        case["batch_sizes"] = torch.tensor(bs, dtype=torch.int64)
        case["input"] = u(sum(bs), I) * 4
    else:
        case["batch_sizes"] = None
        case["input"] = u(T, B, I) * 4
    return case


def ref_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes,
                reverse):
    """Float64, autograd-able; same schedule semantics as the kernels."""
    if batch_sizes is None:
        T, B = input.shape[:2]
        bsz, rows = [B] * T, input.reshape(T * B, -1)
    else:
        bsz, rows = batch_sizes.tolist(), input
    offs = [0]
    for b in bsz[:-1]:
        offs.append(offs[-1] + b)
    h, c = h0, c0
    outs, gates, cells = [None] * len(bsz), [None] * len(bsz), [None] * len(bsz)
    order = range(len(bsz) - 1, -1, -1) if reverse else range(len(bsz))
    for t in order:
        bs, o0 = bsz[t], offs[t]
        pre = rows[o0:o0 + bs] @ w_ih.T + h[:bs] @ w_hh.T
        if b_ih is not None:
            pre = pre + b_ih + b_hh
        i, f, gg, o = pre.chunk(4, 1)
        i, f, gg, o = i.sigmoid(), f.sigmoid(), gg.tanh(), o.sigmoid()
        cn = f * c[:bs] + i * gg
        hn = o * cn.tanh()
        if w_hr is not None:
            hn = hn @ w_hr.T
        h = torch.cat([hn, h[bs:]])
        c = torch.cat([cn, c[bs:]])
        outs[t], gates[t], cells[t] = hn, torch.cat([i, f, gg, o], 1), cn
    out, gates, cells = torch.cat(outs), torch.cat(gates), torch.cat(cells)
    if batch_sizes is None:  # shaped like the input, as the operators return them
        out, gates, cells = (t.view(*input.shape[:2], -1) for t in (out, gates, cells))
    return out, h, c, gates, cells


ARGS = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def run_layer(case, dtype, reverse, grads_seed=1, device=DEV):
    """Our forward+backward on `device` and the float64 reference's.

    `device` is CUDA in the GPU tests; test_harness_on_cpu runs this harness on
    the CPU operators, so that CI checks its plumbing."""
    ops = _ops()
    dev = {k: (v.to(device) if v is not None else None) for k, v in case.items()
           if k != "batch_sizes"}
    bs = case["batch_sizes"]
    fwd = ops.lstm_layer_forward(*(dev[k] for k in ARGS), bs, reverse)
    out, h_n, c_n, gates, cells = fwd
    g = torch.Generator().manual_seed(grads_seed)
    go, gh, gc = (torch.randn(t.shape, generator=g, dtype=torch.float64)
                  for t in (out, h_n, c_n))
    bwd = ops.lstm_layer_backward(
        go.to(device, dtype), gh.to(device, dtype), gc.to(device, dtype),
        *(dev[k] for k in ARGS), out, gates, cells, bs, reverse)

    ref_in = {k: (case[k].double().requires_grad_() if case[k] is not None else None)
              for k in ARGS}
    ref = ref_forward(*(ref_in[k] for k in ARGS), bs, reverse)
    loss = (ref[0] * go).sum() + (ref[1] * gh).sum() + (ref[2] * gc).sum()
    loss.backward()
    ref_grads = [ref_in[k].grad for k in ("input", "h0", "c0", "w_ih", "w_hh")]
    ref_grads.append(ref_in["b_ih"].grad if case["b_ih"] is not None else None)
    ref_grads.append(ref_in["w_hr"].grad if case["w_hr"] is not None else None)
    return fwd, bwd, [r.detach() for r in ref], ref_grads


LAYER_CASES = [
    dict(),                                  # padded
    dict(P=8),                               # projection
    dict(packed=True),                       # packed
    dict(packed=True, P=8, bias=False),      # packed + projection, no bias
    dict(H=37, I=3, B=1),                    # odd sizes, batch 1
    dict(H=20, B=40, T=3),                   # batch > one 32-row chunk
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cfg", LAYER_CASES, ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()) or "padded")
def test_layer_matches_float64(path, dtype, reverse, cfg):
    if path == "persistent" and dtype == torch.float64:
        pytest.skip("float64 has no persistent kernel (see test_persistent_errors)")
    check_layer(make_case(dtype, **cfg), dtype, reverse)


def check_layer(case, dtype, reverse, device=DEV):
    """Our forward and backward of one layer-direction against float64."""
    fwd, bwd, ref, ref_grads = run_layer(case, dtype, reverse, device=device)
    vtol, gtol = TOL[dtype]
    for name, a, r in zip(("output", "h_n", "c_n", "gates", "cells"), fwd, ref):
        assert a.dtype == dtype and a.device.type == torch.device(device).type, name
        assert a.shape == r.shape, (name, a.shape, r.shape)
        close(a, r, vtol, name)
    names = ("grad_input", "grad_h0", "grad_c0", "grad_w_ih", "grad_w_hh",
             "grad_bias", "grad_w_hr")
    for name, a, r in zip(names, bwd, ref_grads):
        if r is None:
            assert a.numel() == 0, name
        else:
            close(a, r, gtol, name)


def test_persistent_errors(monkeypatch):
    ops = _ops()
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "persistent")
    case = make_case(torch.float64)
    args = [case[k].to(DEV) if case[k] is not None else None for k in ARGS]
    with pytest.raises(RuntimeError, match="persistent"):
        ops.lstm_layer_forward(*args, None, False)
    # W_hh of H=4096 in fp16 (128 MiB) cannot be spread over one wave of
    # CTAs' shared memory on any current GPU: a clear error, no fallback.
    H, B, T, I = 4096, 2, 2, 4
    mk = lambda *s: torch.randn(*s, device=DEV, dtype=torch.float16) * 0.01
    args = [mk(T, B, I), mk(B, H), mk(B, H), mk(4 * H, I), mk(4 * H, H),
            mk(4 * H), mk(4 * H), None]
    with pytest.raises(RuntimeError, match="persistent"):
        ops.lstm_layer_forward(*args, None, False)
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "auto")
    fwd = ops.lstm_layer_forward(*args, None, False)  # auto: stepwise
    assert torch.isfinite(fwd[0]).all()
    # The backward refuses just the same, and says which pass could not run.
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "persistent")
    ones = [torch.ones_like(t) for t in fwd[:3]]
    with pytest.raises(RuntimeError, match="persistent backward kernel"):
        ops.lstm_layer_backward(*ones, *args, fwd[0], fwd[3], fwd[4], None, False)
    f64 = [case[k].to(DEV) if case[k] is not None else None for k in ARGS]
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "stepwise")
    fwd = ops.lstm_layer_forward(*f64, None, False)
    ones = [torch.ones_like(t) for t in fwd[:3]]
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "persistent")
    with pytest.raises(RuntimeError, match="persistent backward kernel: float64"):
        ops.lstm_layer_backward(*ones, *f64, fwd[0], fwd[3], fwd[4], None, False)
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "bogus")
    with pytest.raises(RuntimeError, match="FUSEDLSTM_CUDA_PATH"):
        ops.lstm_layer_forward(*args, None, False)


@pytest.mark.parametrize("dtype,H", [(torch.float16, 1024), (torch.bfloat16, 1024),
                                     (torch.float32, 512)], ids=str)
def test_persistent_fits_common_sizes(monkeypatch, dtype, H):
    """Sizes people use must really take the persistent path on an H100."""
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "persistent")
    case = make_case(dtype, I=64, H=H, B=16, T=4)
    fwd, bwd, ref, ref_grads = run_layer(case, dtype, False)  # both passes
    close(fwd[0], ref[0], TOL[dtype][0] * 4, "output")
    for name, i in (("grad_input", 0), ("grad_h0", 1), ("grad_w_hh", 4)):
        close(bwd[i], ref_grads[i], TOL[dtype][1] * 4, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_paths_agree(monkeypatch, dtype):
    case = make_case(dtype, P=8, packed=True)
    outs = {}
    for p in PATHS if dtype != torch.float64 else ["stepwise"]:
        monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", p)
        fwd, bwd = run_layer(case, dtype, True)[:2]
        outs[p] = (fwd, [g for g in bwd if g.numel()])
    if len(outs) == 2:
        (fa, ga), (fb, gb) = outs.values()
        for a, b in zip(fa, fb):
            close(a, b.double(), TOL[dtype][0], "forward: persistent vs stepwise")
        assert len(ga) == len(gb)
        for a, b in zip(ga, gb):
            close(a, b.double(), TOL[dtype][1], "backward: persistent vs stepwise")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cfg", [dict(), dict(P=8, packed=True)], ids=["padded", "packed-proj"])
def test_inference_keeps_no_activations(path, dtype, cfg):
    """lstm_layer_inference returns forward's bits while allocating no
    cells: its peak memory is below forward's by at least the [N, H] cells
    (the kernels write no activations back, csrc/cuda/forward_cuda.cpp)."""
    ops = _ops()
    case = make_case(dtype, H=128, B=16, T=64, **cfg)
    args = [case[k].to(DEV) if case[k] is not None else None for k in ARGS]
    peaks, results = [], []
    for op in (ops.lstm_layer_forward, ops.lstm_layer_inference):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = op(*args, case["batch_sizes"], False)
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
        results.append(out[:3])
        del out
    assert_bitwise(results[1], results[0], "output")
    rows = case["input"].numel() // case["input"].shape[-1]
    cells_bytes = rows * 128 * torch.empty(0, dtype=dtype).element_size()
    assert peaks[1] <= peaks[0] - cells_bytes, (peaks, cells_bytes)


# ---------------------------------------------------------------------------
# Determinism and CUDA graphs.

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_bitwise_deterministic(path, dtype):
    case = make_case(dtype, P=8, packed=True, B=40, T=6)
    a = run_layer(case, dtype, False)
    b = run_layer(case, dtype, False)
    assert_bitwise(list(b[0]) + list(b[1]), list(a[0]) + list(a[1]), "result")


@pytest.mark.parametrize("proj", [0, 8])
def test_cuda_graph_replay_equals_eager(path, proj):
    ops = _ops()
    dtype = torch.float32
    case = make_case(dtype, P=proj, packed=True)
    dev = [case[k].to(DEV) if case[k] is not None else None for k in ARGS]
    bs = case["batch_sizes"]

    def step(args):
        return layer_step(ops, args, bs)

    eager = step(dev)
    captured = assert_graph_replay_equals_eager(step, dev)
    assert len(eager) == len(captured)


def layer_step(ops, args, bs):
    """Forward and backward (gradients of ones) of one layer-direction: the
    work the CUDA-graph test captures. Its outputs, empty ones left out."""
    fwd = ops.lstm_layer_forward(*args, bs, False)
    grads = [torch.ones_like(fwd[0]), torch.ones_like(fwd[1]),
             torch.ones_like(fwd[2])]
    bwd = ops.lstm_layer_backward(*grads, *args, fwd[0], fwd[3], fwd[4], bs, False)
    return list(fwd) + [t for t in bwd if t.numel()]


def assert_graph_replay_equals_eager(step, dev):
    """Captures step(copies of dev) in a CUDA graph, puts new data (dev * 0.5)
    in the same buffers and replays: the results must equal an eager call on
    the new data, bitwise. Returns the replayed results."""
    static = [t.clone() if t is not None else None for t in dev]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up off the capture, as torch docs advise
        step(static)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(static)
    for t, src in zip(static, dev):
        if t is not None:
            t.copy_(src * 0.5)
    graph.replay()
    torch.cuda.synchronize()
    expect = step([t * 0.5 if t is not None else None for t in dev])
    assert_bitwise(captured, expect, "replayed result")
    return captured


# ---------------------------------------------------------------------------
# The module against torch.nn.LSTM (cuDNN) and float64.

def _module_cls():
    cls = getattr(fusedlstm, "LSTM", None) if fusedlstm is not None else None
    if cls is None:
        pytest.fail("fusedlstm.LSTM missing: the package did not import")
    return cls


def _run_module(mod, x, hx, packed_lengths, go_seed=3):
    """Forward + backward; returns outputs and gradients (float64, CPU)."""
    x = x.detach().requires_grad_()
    inp = x
    if packed_lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            x, packed_lengths, batch_first=mod.batch_first, enforce_sorted=False)
    out, (h_n, c_n) = mod(inp, hx)
    if packed_lengths is not None:
        out = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=mod.batch_first)[0]
    g = torch.Generator().manual_seed(go_seed)
    loss = sum((t.double() * torch.randn(t.shape, generator=g, dtype=torch.float64)
                .to(t.device)).sum() for t in (out, h_n, c_n))
    loss.backward()
    res = [out, h_n, c_n, x.grad] + [p.grad for p in mod.parameters()]
    return [r.detach().cpu().double() for r in res]


MODULE_CASES = [
    dict(num_layers=2),
    dict(num_layers=2, bidirectional=True),
    dict(proj_size=6, bidirectional=True),
    dict(batch_first=True, packed=True, bidirectional=True),
    dict(num_layers=2, proj_size=5, packed=True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", MODULE_CASES, ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()))
def test_module_vs_cudnn(path, dtype, cfg):
    if path == "persistent" and dtype == torch.float64:
        pytest.skip("float64 has no persistent kernel (see test_persistent_errors)")
    check_module(cfg, dtype)


def check_module(cfg, dtype, device=DEV):
    """fusedlstm.LSTM on `device` against float64 (float32, float64) or,
    for half types, the half-precision rule against torch.nn.LSTM there."""
    LSTM = _module_cls()
    cfg = dict(cfg)
    packed = cfg.pop("packed", False)
    I, H, B, T = 7, 16, 4, 6
    torch.manual_seed(0)
    ref64 = torch.nn.LSTM(I, H, **cfg).double()
    ours = LSTM(I, H, **cfg).to(device, dtype)
    ours.load_state_dict(ref64.state_dict())
    cudnn = torch.nn.LSTM(I, H, **cfg).to(device, dtype)
    cudnn.load_state_dict(ref64.state_dict())
    # The reference sees exactly the rounded weights and inputs.
    ref64.load_state_dict({k: v.to(dtype).double() for k, v in ref64.state_dict().items()})
    shape = (B, T, I) if cfg.get("batch_first") else (T, B, I)
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    D = 2 if cfg.get("bidirectional") else 1
    L = cfg.get("num_layers", 1)
    S = cfg.get("proj_size", 0) or H
    hx = (torch.randn(L * D, B, S).to(dtype), torch.randn(L * D, B, H).to(dtype))
    lengths = torch.tensor([T, T - 2, 1, T - 1]) if packed else None

    def on(dev, dt):
        return x.to(dev, dt), tuple(h.to(dev, dt) for h in hx)

    r = _run_module(ref64, *on("cpu", torch.float64), lengths)
    a = _run_module(ours, *on(device, dtype), lengths)
    if dtype in (torch.float32, torch.float64):
        vtol, gtol = TOL[dtype]
        for i, (x1, x2) in enumerate(zip(a, r)):
            close(x1, x2, vtol if i < 3 else gtol, f"tensor {i}")
        return
    try:
        c = _run_module(cudnn, *on(device, dtype), lengths)
    except RuntimeError:  # no cuDNN kernel for this dtype: native CUDA LSTM
        with torch.backends.cudnn.flags(enabled=False):
            c = _run_module(cudnn, *on(device, dtype), lengths)
    for i, (ours_t, cudnn_t, ref_t) in enumerate(zip(a, c, r)):
        ours_err = (ours_t - ref_t).abs().max().item()
        cudnn_err = (cudnn_t - ref_t).abs().max().item()
        scale = max(1.0, ref_t.abs().max().item())
        assert ours_err <= 2 * cudnn_err + HALF_ATOL[dtype] * scale, (
            f"tensor {i}: our error {ours_err:.3g} vs cuDNN's {cudnn_err:.3g}")
