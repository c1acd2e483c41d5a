"""torch.save/torch.load across CPU and GPU (map_location) for fusedlstm
modules, checked against nn.LSTM on the same device. Skipped, with the
reason shown, where CUDA is absent."""
import io

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402  (registers torch.ops.fusedlstm)

CONFIG = dict(num_layers=2, bidirectional=True, proj_size=3)


def _round_trip(obj, map_location, weights_only):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, map_location=map_location, weights_only=weights_only)


def _outputs(module, x):
    out, (h, c) = module(x)
    return out, h, c


def _check_against_nn(ours, device):
    ref = nn.LSTM(4, 6, **CONFIG).to(device)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3, 4, device=device)
    torch.testing.assert_close(_outputs(ours, x), _outputs(ref, x))


@pytest.mark.parametrize("weights_only", [False, True])
@pytest.mark.parametrize("direction", ["cpu_to_cuda", "cuda_to_cpu"])
def test_map_location_across_devices(direction, weights_only):
    source, target = direction.split("_to_")
    torch.manual_seed(0)
    ours = fusedlstm.LSTM(4, 6, **CONFIG).to(source)
    saved = ours.state_dict() if weights_only else ours
    loaded = _round_trip(saved, target, weights_only)
    if weights_only:
        module = fusedlstm.LSTM(4, 6, **CONFIG).to(target)
        module.load_state_dict(loaded)
        loaded = module
    assert type(loaded) is fusedlstm.LSTM
    assert all(p.device.type == target for p in loaded.parameters())
    for a, b in zip(loaded.state_dict().values(), ours.state_dict().values()):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0)
    _check_against_nn(loaded, target)


def test_nn_lstm_cuda_checkpoint_into_fusedlstm_cpu():
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, **CONFIG).cuda()
    ours = fusedlstm.LSTM(4, 6, **CONFIG)
    ours.load_state_dict(_round_trip(ref.state_dict(), "cpu", True))
    _check_against_nn(ours, "cpu")
