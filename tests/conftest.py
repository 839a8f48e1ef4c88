import os
import zlib

import pytest

# CPU tensors run the real Triton kernels through the interpreter: opted in before the first
# import of ascend_kernels (and of triton, which it imports)
os.environ.setdefault("ASCEND_KERNELS_INTERPRET", "1")
import ascend_kernels  # noqa: E402,F401
import torch  # noqa: E402


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
    for var in ("ASCEND_KERNELS_BACKEND", "ASCEND_KERNELS_AUTOTUNE", "ASCEND_KERNELS_TUNED", "ASCEND_KERNELS_CHECK_BOUNDS",
                "ASCEND_KERNELS_PA_SPLIT_SIZE"):
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


def seed_of_test(offset: int = 0) -> int:
    """A seed that reproduces from the running test's id (Python's hash() is salted per
    process), plus `offset` for a second independent draw in one test."""
    nodeid = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    return zlib.crc32(nodeid.encode()) + offset


@pytest.fixture
def seed(request) -> int:
    return zlib.crc32(request.node.nodeid.encode())
