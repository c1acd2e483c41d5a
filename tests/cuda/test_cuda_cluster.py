"""GPU checks of the thread-block-cluster kernels (FUSEDLSTM_CUDA_PATH=cluster).

The cluster kernels run the forward and the backward of a layer without
projection whose W_hh fits in one cluster's shared memory
(csrc/cuda/persistent/cluster_fwd.cuh, cluster_bwd.cuh). Checked here against
the float64 reference of test_cuda_parity (same tolerances), against the
cooperative persistent kernels, for bitwise run-to-run determinism and
CUDA-graph replay, and for the errors of layers they cannot run. Skipped,
with the reason shown, where CUDA is absent or the GPU has no clusters
(sm_90+).
"""
import pytest
import torch

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not present"),
    pytest.mark.skipif(torch.cuda.is_available()
                       and torch.cuda.get_device_capability() < (9, 0),
                       reason="thread-block clusters need sm_90 or later"),
]

from test_cuda_parity import (ARGS, DEV, TOL, _ops,  # noqa: E402
                              assert_graph_replay_equals_eager, check_layer,
                              close, layer_step, make_case, run_layer)

DTYPES = [torch.float16, torch.bfloat16]
CASES = [
    dict(),                                  # padded, H24
    dict(packed=True),                       # packed
    dict(H=37, I=3, B=1),                    # odd sizes, batch 1
    dict(H=20, B=40, T=3),                   # batch > one 32-row chunk
    dict(H=256, I=256, B=8, T=30),           # G3-like width
    dict(H=512, I=512, B=16, T=12),          # 16-CTA clusters (non-portable)
]


@pytest.fixture
def cluster(monkeypatch):
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "cluster")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cfg", CASES, ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()) or "padded")
def test_cluster_matches_float64(cluster, dtype, reverse, cfg):
    check_layer(make_case(dtype, **cfg), dtype, reverse)


def _on_paths(monkeypatch, case, dtype, paths):
    """{path: (forward results, backward results)} of the case on each path."""
    out = {}
    for path in paths:
        monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", path)
        out[path] = run_layer(case, dtype, False)[:2]
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cluster_agrees_with_persistent(monkeypatch, dtype):
    # Different CTA splits sum the products in different orders, so within
    # the dtype's tolerance rather than bitwise.
    case = make_case(dtype, H=256, I=64, B=16, T=20, packed=True)
    out = _on_paths(monkeypatch, case, dtype, ("cluster", "persistent"))
    (fc, gc), (fp, gp) = out["cluster"], out["persistent"]
    for a, b in zip(fc, fp):
        close(a, b.double(), TOL[dtype][0], "forward: cluster vs persistent")
    for a, b in zip(gc, gp):
        close(a, b.double(), TOL[dtype][1], "backward: cluster vs persistent")


def test_cluster_tf32(cluster):
    # float32 runs on the cluster kernel only through TF32, as cuDNN would.
    case = make_case(torch.float32, H=64, I=16, B=4, T=6)
    with pytest.raises(RuntimeError, match="tensor cores"):
        run_layer(case, torch.float32, False)
    torch.backends.cudnn.allow_tf32 = True  # conftest restores it
    fwd, bwd, ref, ref_grads = run_layer(case, torch.float32, False)
    for name, a, r in zip(("output", "h_n", "c_n"), fwd, ref):
        close(a, r, TOL[torch.float16][0], name)  # TF32 keeps float16's 10 bits
    for name, a, r in zip(("grad_input", "grad_h0", "grad_c0", "grad_w_ih",
                           "grad_w_hh"), bwd, ref_grads):
        close(a, r, TOL[torch.float16][1], name)


def test_cluster_errors(cluster):
    with pytest.raises(RuntimeError, match="cluster forward kernel: the cluster "
                                           "kernel has no projection"):
        run_layer(make_case(torch.bfloat16, P=8), torch.bfloat16, False)
    with pytest.raises(RuntimeError, match="float64 has no persistent kernel"):
        run_layer(make_case(torch.float64), torch.float64, False)
    # bfloat16 W_hh of H = 1024 is 8 MB: more than 16 CTAs' shared memory.
    with pytest.raises(RuntimeError, match="does not fit in the shared memory"):
        run_layer(make_case(torch.bfloat16, H=1024, I=8, B=2, T=2),
                  torch.bfloat16, False)


def test_cluster_backward_in_waves_matches_float64(cluster):
    # H = 512, B = 96 on 16-CTA clusters, of which at most 8 are resident on
    # an H100/H200: 12 or more rows a cluster. Beside a CTA's 130 KB of
    # W_hh, shared memory holds up to ~39 rows of h (the forward runs in one
    # wave) but only ~10 of the gate gradients, four times as wide: the
    # backward's plan takes the widest tile that fits and runs its clusters
    # in waves (launch_plan.cuh, plan_cluster's second pass), which an
    # explicit request gets and `auto` declines (cluster_pays_off).
    check_layer(make_case(torch.bfloat16, H=512, I=8, B=96, T=3), torch.bfloat16, False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_auto_takes_the_cluster_kernels(monkeypatch, dtype):
    # A small layer, whose cluster plans are one wave on any sm_90 GPU: auto
    # runs it on the cluster kernels (NOTES change 68), so its results are
    # the explicit request's bits, in both passes.
    case = make_case(dtype, H=64, I=16, B=4, T=6, packed=True)
    out = _on_paths(monkeypatch, case, dtype, ("cluster", "auto"))
    (fc, gc), (fa, ga) = out["cluster"], out["auto"]
    for a, b in zip(list(fc) + list(gc), list(fa) + list(ga)):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", [dict(packed=True, B=40, T=6), dict(H=256, I=64, B=8, T=20)],
                         ids=["packed-B40", "H256-B8"])
def test_cluster_split_sync_equals_whole(cluster, monkeypatch, dtype, cfg):
    # The split-phase step barrier of the forward and the backward (NOTES
    # changes 71 and 72, the default) moves stores and loads, not
    # arithmetic: the bits of one whole cluster.sync() a step, in both passes.
    case = make_case(dtype, **cfg)
    out = {}
    for mode in ("split", "whole"):
        monkeypatch.setenv("FUSEDLSTM_CLUSTER_SYNC", mode)
        out[mode] = run_layer(case, dtype, False)[:2]
    (fs, gs), (fw, gw) = out["split"], out["whole"]
    for a, b in zip(list(fs) + list(gs), list(fw) + list(gw)):
        assert (a is None and b is None) or torch.equal(a, b)
    monkeypatch.setenv("FUSEDLSTM_CLUSTER_SYNC", "halves")
    with pytest.raises(RuntimeError, match="FUSEDLSTM_CLUSTER_SYNC must be split or whole"):
        run_layer(case, dtype, False)


def test_cluster_batch_zero_like_nn_lstm(cluster):
    import fusedlstm
    ref = torch.nn.LSTM(16, 32, device=DEV, dtype=torch.bfloat16)
    ours = fusedlstm.LSTM(16, 32, device=DEV, dtype=torch.bfloat16)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 0, 16, device=DEV, dtype=torch.bfloat16)
    for a, b in zip((ours(x)[0],) + ours(x)[1], (ref(x)[0],) + ref(x)[1]):
        assert a.shape == b.shape and a.dtype == b.dtype and a.numel() == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cluster_bitwise_deterministic(cluster, dtype):
    case = make_case(dtype, H=128, I=32, packed=True, B=40, T=6)
    a = run_layer(case, dtype, False)
    b = run_layer(case, dtype, False)
    for x, y in zip(list(a[0]) + list(a[1]), list(b[0]) + list(b[1])):
        assert torch.equal(x, y)


def test_cluster_cuda_graph_replay_equals_eager(cluster):
    ops = _ops()
    dtype = torch.bfloat16
    case = make_case(dtype, H=64, I=16, packed=True)
    dev = [case[k].to(DEV) if case[k] is not None else None for k in ARGS]
    bs = case["batch_sizes"]

    def step(args):  # forward and backward, both on the cluster kernels
        return layer_step(ops, args, bs)

    assert_graph_replay_equals_eager(step, dev)
