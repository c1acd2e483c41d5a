"""pytest configuration of the GPU tests (tests/cuda)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _no_tf32():
    # Exact fp32 everywhere, so the float32 tolerance means something.
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
