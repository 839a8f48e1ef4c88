import pytest
import torch

import ascend_kernels as ak
from ascend_kernels.reference.reshape_and_cache import quantize


def ref_reshape_and_cache(key, value, key_cache, value_cache, slots, k_scale=None, v_scale=None):
    """The expected caches, one token at a time (independent of reference/, which is also the
    op's fallback path): token i goes to slot slots[i] unless it is padding or past the cache."""
    block_size = key_cache.shape[1]
    for i, slot in enumerate(slots.tolist()):
        if 0 <= slot < key_cache.shape[0] * block_size:
            key_cache[slot // block_size, slot % block_size] = quantize(key[i], k_scale, key_cache.dtype)
            value_cache[slot // block_size, slot % block_size] = quantize(value[i], v_scale, value_cache.dtype)

from .conftest import devices


def _random_slots(n, num_slots, dtype, device, pad_every=3):
    """Distinct slots (duplicates have no defined winner), every pad_every-th one padding."""
    slots = torch.randperm(num_slots)[:n].to(dtype)
    if pad_every:
        slots[::pad_every] = -1
    return slots.to(device)


def _caches(num_blocks, block_size, heads, head_size, dtype, device, combined=False):
    if combined:  # strided views of one [num_blocks, 2, block_size, heads, head_size] tensor
        kv = torch.randn(num_blocks, 2, block_size, heads, head_size, device=device).to(dtype)
        return kv[:, 0], kv[:, 1]
    if dtype == torch.int8:
        mk = lambda: torch.randint(-128, 128, (num_blocks, block_size, heads, head_size),  # noqa: E731
                                   dtype=torch.int8, device=device)
        return mk(), mk()
    mk = lambda: torch.randn(num_blocks, block_size, heads, head_size, device=device).to(dtype)  # noqa: E731
    return mk(), mk()


def _check(key, value, kc, vc, slots, **scales):
    ek, ev = kc.clone(), vc.clone()
    ref_reshape_and_cache(key, value, ek, ev, slots, scales.get("k_scale"), scales.get("v_scale"))
    ak.reshape_and_cache(key, value, kc, vc, slots, **scales)
    # every element: the written slots and the untouched ones (the rest is random, not zero)
    assert torch.equal(kc, ek)
    assert torch.equal(vc, ev)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("slot_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("dtype,heads,head_size,block_size", [
    (torch.float16, 2, 64, 16), (torch.bfloat16, 3, 80, 32), (torch.float32, 1, 96, 16)])
def test_matches_reference(device, slot_dtype, dtype, heads, head_size, block_size):
    num_tokens, num_blocks = 13, 5
    key = torch.randn(num_tokens, heads, head_size, device=device).to(dtype)
    value = torch.randn(num_tokens, heads, head_size, device=device).to(dtype)
    kc, vc = _caches(num_blocks, block_size, heads, head_size, dtype, device)
    slots = _random_slots(num_tokens, num_blocks * block_size, slot_dtype, device)
    assert ak.explain("reshape_and_cache", key, value, kc, vc, slots).path == "triton"
    _check(key, value, kc, vc, slots)


@pytest.mark.parametrize("device", devices())
def test_strided_inputs_longer_than_slots_and_combined_cache(device):
    heads, head_size, block_size, num_blocks = 2, 48, 16, 3
    qkv = torch.randn(11, 3 * heads + 1, head_size, device=device, dtype=torch.bfloat16)
    key, value = qkv[:, :heads], qkv[:, heads:2 * heads]  # strided views of a fused qkv
    kc, vc = _caches(num_blocks, block_size, heads, head_size, torch.bfloat16, device, combined=True)
    slots = _random_slots(7, num_blocks * block_size, torch.int64, device)  # 7 < 11 tokens
    _check(key, value, kc, vc, slots)


@pytest.mark.parametrize("device", devices())
def test_int8_cache_with_scales(device):
    heads, head_size, block_size, num_blocks = 2, 64, 16, 2
    key = torch.randn(9, heads, head_size, device=device, dtype=torch.float16) * 3
    value = torch.randn(9, heads, head_size, device=device, dtype=torch.float16) * 3
    kc, vc = _caches(num_blocks, block_size, heads, head_size, torch.int8, device)
    slots = _random_slots(9, num_blocks * block_size, torch.int32, device)
    k_scale = torch.tensor([0.02], device=device)
    v_scale = torch.tensor([0.05], device=device)
    ek, ev = kc.clone(), vc.clone()
    ref_reshape_and_cache(key, value, ek, ev, slots, k_scale, v_scale)
    ak.reshape_and_cache(key, value, kc, vc, slots, k_scale=k_scale, v_scale=v_scale)
    # x / scale may differ by an ulp between backends; rounding can then move by one step
    assert (kc.int() - ek.int()).abs().max() <= 1 and (vc.int() - ev.int()).abs().max() <= 1
    assert (kc != ek).float().mean() < 0.01 and (vc != ev).float().mean() < 0.01
    assert kc.min() == -128 and kc.max() == 127  # saturation exercised (|x|/0.02 >> 127)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("per_head,heads,head_size,slot_dtype", [
    (True, 3, 80, torch.int64), (False, 5, 96, torch.int32), (True, 1, 112, torch.int32)])
def test_int8_cache_scales_per_tensor_and_per_head(device, seed, per_head, heads, head_size, slot_dtype):
    g = torch.Generator().manual_seed(seed)
    block_size, num_blocks, n = 16, 3, 11
    key, value = (torch.randn(n, heads, head_size, generator=g).to(device, torch.bfloat16) * 2 for _ in range(2))
    kc, vc = (torch.randint(-128, 128, (num_blocks, block_size, heads, head_size), generator=g,
                            dtype=torch.int8).to(device) for _ in range(2))
    slots = _random_slots(n, num_blocks * block_size, slot_dtype, device)
    m = heads if per_head else 1
    scales = dict(k_scale=(0.01 + 0.05 * torch.rand(m, generator=g)).to(device),
                  v_scale=(0.01 + 0.05 * torch.rand(m, generator=g)).to(device))
    ek, ev = kc.clone(), vc.clone()
    ref_reshape_and_cache(key, value, ek, ev, slots, scales["k_scale"], scales["v_scale"])
    ak.reshape_and_cache(key, value, kc, vc, slots, **scales)
    # x / scale may differ by an ulp between backends; rounding can then move by one step
    assert (kc.int() - ek.int()).abs().max() <= 1 and (vc.int() - ev.int()).abs().max() <= 1
    assert (kc != ek).float().mean() < 0.01 and (vc != ev).float().mean() < 0.01


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("per_head", [False, True])
def test_gpu_fp8_cache_scales(cache_dtype, per_head):
    heads, head_size, block_size, num_blocks = 4, 128, 16, 8
    key, value = (torch.randn(50, heads, head_size, device="cuda", dtype=torch.bfloat16) * 50 for _ in range(2))
    kc, vc = (torch.randn(num_blocks, block_size, heads, head_size, device="cuda").to(cache_dtype) for _ in range(2))
    slots = _random_slots(50, num_blocks * block_size, torch.int64, "cuda")
    m = heads if per_head else 1
    scales = dict(k_scale=0.05 + torch.rand(m, device="cuda") * 0.1, v_scale=0.05 + torch.rand(m, device="cuda") * 0.1)
    ek, ev = kc.clone(), vc.clone()
    ref_reshape_and_cache(key, value, ek, ev, slots, scales["k_scale"], scales["v_scale"])
    ak.reshape_and_cache(key, value, kc, vc, slots, **scales)
    # one fp8 step apart at most where x / scale rounds differently
    torch.testing.assert_close(kc.float(), ek.float(), rtol=0.13, atol=0)
    torch.testing.assert_close(vc.float(), ev.float(), rtol=0.13, atol=0)


def test_fp8_cache_on_cpu_falls_back_with_reason():
    key = torch.randn(4, 1, 32)
    kc = torch.randn(2, 16, 1, 32).to(torch.float8_e4m3fn)
    vc = kc.clone()
    slots = torch.tensor([0, 5, -1, 17])
    s = torch.tensor([0.5])
    d = ak.explain("reshape_and_cache", key, key, kc, vc, slots, k_scale=s, v_scale=s)
    assert d.path == "fallback" and "fp8" in d.reason
    _check(key, key.clone(), kc, vc, slots, k_scale=s, v_scale=s)


@pytest.mark.parametrize("device", devices())
def test_out_of_range_slots_are_never_written(device, monkeypatch):
    heads, head_size, block_size, num_blocks = 1, 32, 16, 2
    key = torch.randn(4, heads, head_size, device=device)
    kc, vc = _caches(num_blocks, block_size, heads, head_size, torch.float32, device)
    slots = torch.tensor([3, 32, 10_000, -5], device=device)  # 32 is one past the last slot
    _check(key, key.clone(), kc, vc, slots)
    monkeypatch.setenv("ASCEND_KERNELS_CHECK_BOUNDS", "1")
    with pytest.raises(ValueError, match=r"slot_mapping\[1\] = 32"):
        ak.reshape_and_cache(key, key.clone(), kc, vc, slots)


def test_empty_slot_mapping_is_a_no_op():
    key = torch.randn(3, 1, 16)
    kc, vc = _caches(1, 16, 1, 16, torch.float32, "cpu")
    before = kc.clone()
    ak.reshape_and_cache(key, key, kc, vc, torch.empty(0, dtype=torch.int64))
    assert torch.equal(kc, before)


_I8 = torch.zeros(3, 16, 2, 32, dtype=torch.int8)


@pytest.mark.parametrize("bad,match,exc", [
    (dict(slot_mapping=torch.zeros(4)), "slot_mapping", TypeError),
    (dict(slot_mapping=torch.zeros(2, 2, dtype=torch.int64)), "slot_mapping", ValueError),
    (dict(key=torch.randn(4, 3, 32), value=torch.randn(4, 3, 32)), "key_cache.shape\\[2\\]", ValueError),
    (dict(key=torch.randn(4, 2, 16), value=torch.randn(4, 2, 16)), "key_cache.shape\\[3\\]", ValueError),
    (dict(value=torch.randn(4, 2, 16)), "key and value", ValueError),
    (dict(key=torch.randn(2, 2, 32), value=torch.randn(2, 2, 32)), "fewer than", ValueError),
    (dict(key=torch.randint(0, 3, (4, 2, 32))), "key must have dtype", TypeError),
    (dict(key_cache=torch.randn(3, 16, 2, 32).double()), "key_cache must have dtype", TypeError),
    (dict(value_cache=torch.randn(3, 8, 2, 32)), "same shape", ValueError),
    (dict(key_cache=torch.zeros(3, 16, 2, 32, dtype=torch.int8),
          value_cache=torch.zeros(3, 16, 2, 32, dtype=torch.int8)), "k_scale and v_scale", ValueError),
    (dict(k_scale=0.5), "k_scale/v_scale apply", ValueError),
    (dict(key="not a tensor"), "key must be a torch.Tensor", TypeError),
    (dict(key_cache=_I8, value_cache=_I8, k_scale=torch.ones(3), v_scale=torch.ones(3)),
     r"k_scale must be one per-tensor scale or fp32 \[num_kv_heads\] = \[2\]", ValueError),
    (dict(key_cache=_I8, value_cache=_I8, k_scale=torch.ones(2, dtype=torch.float16), v_scale=torch.ones(2)),
     "k_scale must have dtype", TypeError),
    (dict(key_cache=_I8, value_cache=_I8, k_scale=torch.ones(1), v_scale=torch.ones(1, device="meta")),
     "v_scale", ValueError),
    (dict(key_cache=_I8, value_cache=_I8, k_scale=torch.ones(2), v_scale=0.5), "must both be per tensor", ValueError),
])
def test_bad_input_names_the_argument(bad, match, exc):
    args = dict(key=torch.randn(4, 2, 32), value=torch.randn(4, 2, 32),
                key_cache=torch.randn(3, 16, 2, 32), value_cache=torch.randn(3, 16, 2, 32),
                slot_mapping=torch.tensor([0, 1, -1, 7]))
    args.update(bad)
    scales = {k: args.pop(k) for k in ("k_scale", "v_scale") if k in args}
    with pytest.raises(exc, match=match):
        ak.reshape_and_cache(**args, **scales)


def test_forced_backend_and_explain(monkeypatch):
    key = torch.randn(5, 1, 16)
    kc, vc = _caches(2, 16, 1, 16, torch.float32, "cpu")
    slots = torch.tensor([1, 2, 3, -1, 30])
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "fallback")
    d = ak.explain("reshape_and_cache", key, key, kc, vc, slots)
    assert d.path == "fallback" and "ASCEND_KERNELS_BACKEND=fallback" in str(d)
    _check(key, key.clone(), kc, vc, slots)
    # a head dim that is not contiguous: the kernel refuses it, forcing triton raises
    key_t = torch.randn(5, 1, 32)[..., ::2]
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="not contiguous in head_size"):
        ak.reshape_and_cache(key_t, key_t, kc, vc, slots)
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "auto")
    assert ak.explain("reshape_and_cache", key_t, key_t, kc, vc, slots).path == "fallback"
    _check(key_t, key_t.clone(), kc, vc, slots)
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="ASCEND_KERNELS_BACKEND"):
        ak.reshape_and_cache(key, key, kc, vc, slots)


def test_registered_as_custom_op_with_fake():
    op = torch.ops.ascend_kernels.reshape_and_cache.default
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        key = torch.randn(4, 2, 32)
        kc = torch.randn(3, 16, 2, 32)
        torch.ops.ascend_kernels.reshape_and_cache(key, key, kc, kc.clone(),
                                                   torch.tensor([0, 1, 2, 3]), None, None)
    schema = str(op._schema)
    assert "Tensor(a2!) key_cache" in schema and "Tensor(a3!) value_cache" in schema
    key, kc = torch.randn(4, 2, 32), torch.randn(3, 16, 2, 32)
    torch.library.opcheck(op, (key, key.clone(), kc, kc.clone(), torch.tensor([0, 1, -1, 47]), None, None),
                          test_utils=("test_schema", "test_faketensor"))


# --- GPU: large shapes and graph capture (run on the device machine) ----------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("slot_dtype", [torch.int32, torch.int64])
def test_gpu_large_and_graph_replay(slot_dtype):
    dev = "cuda"
    t, h, d, bs, num_blocks = 8192, 8, 128, 16, 4096
    key = torch.randn(t, h, d, device=dev, dtype=torch.bfloat16)
    value = torch.randn(t, h, d, device=dev, dtype=torch.bfloat16)
    kc, vc = _caches(num_blocks, bs, h, d, torch.bfloat16, dev, combined=True)
    slots = _random_slots(t, num_blocks * bs, slot_dtype, dev, pad_every=5)
    _check(key, value, kc, vc, slots)
    # capture once, replay with new slot values written into the same tensor
    static_slots = slots.clone()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ak.reshape_and_cache(key, value, kc, vc, static_slots)
    for _ in range(2):
        static_slots.copy_(_random_slots(t, num_blocks * bs, slot_dtype, dev, pad_every=7))
        ek, ev = kc.clone(), vc.clone()
        ref_reshape_and_cache(key, value, ek, ev, static_slots)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(kc, ek) and torch.equal(vc, ev)


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.int8])
def test_gpu_quantized_caches(cache_dtype):
    dev = "cuda"
    key = torch.randn(300, 4, 96, device=dev, dtype=torch.float16) * 4
    value = torch.randn(300, 4, 96, device=dev, dtype=torch.float16) * 4
    kc = torch.randn(40, 16, 4, 96, device=dev).to(cache_dtype)
    vc = torch.randn(40, 16, 4, 96, device=dev).to(cache_dtype)
    slots = _random_slots(300, 640, torch.int64, dev)
    k_scale, v_scale = torch.tensor([0.01], device=dev), torch.tensor([0.03], device=dev)
    assert ak.explain("reshape_and_cache", key, value, kc, vc, slots, k_scale=k_scale,
                      v_scale=v_scale).path == "triton"
    ek, ev = kc.clone(), vc.clone()
    ref_reshape_and_cache(key, value, ek, ev, slots, k_scale, v_scale)
    ak.reshape_and_cache(key, value, kc, vc, slots, k_scale=k_scale, v_scale=v_scale)
    # fp32 division may differ by an ulp from torch's: compare values, one quantum apart at most
    tol = 1 if cache_dtype == torch.int8 else 0.13 * ek.float().abs() + 1e-6
    assert ((kc.float() - ek.float()).abs() <= tol).all() and ((vc.float() - ev.float()).abs() <= tol).all()
    assert (kc.view(torch.uint8) != ek.view(torch.uint8)).float().mean() < 0.01
