import pytest

import ascend_kernels  # noqa: F401  (before torch/triton users: turns the interpreter on for CPU)
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run on the device machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Each test gets its own tuning cache dir and no forced backend."""
    monkeypatch.setenv("ASCEND_KERNELS_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("ASCEND_KERNELS_BACKEND", "ASCEND_KERNELS_AUTOTUNE", "ASCEND_KERNELS_CHECK_BOUNDS"):
        monkeypatch.delenv(var, raising=False)
    from ascend_kernels.launcher import autotune

    autotune.reset()
    yield
    autotune.reset()


def devices():
    """Devices the op tests run on: the CPU (interpreter) always, CUDA when present."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


def poison_like(t: torch.Tensor) -> torch.Tensor:
    """A tensor of t's shape filled with NaN (floats) or a sentinel (ints): unwritten shows."""
    if t.dtype.is_floating_point:
        return torch.full_like(t, float("nan"))
    return torch.full_like(t, -7)
