"""fallback_atb against the strict fake torch_npu (tests/npu_fakes.py): every call either stays
inside the operator's documented contract (the fake raises otherwise) or takes another path
whose reason the test checks; results match the reference on fresh random inputs."""
import math
import sys
import zlib

import pytest
import torch

from ascend_kernels.fallback_atb import _npu
from ascend_kernels.fallback_atb import flash_attention as fa
from ascend_kernels.fallback_atb import fused_infer_attention as fia
from ascend_kernels.fallback_atb import paged_attention as pa
from ascend_kernels.fallback_atb import reshape_and_cache as rac
from ascend_kernels.fallback_atb import topk_topp_sampling as tk
from ascend_kernels.reference import flash_attention as ref_fa
from ascend_kernels.reference import topk_topp_sampling as ref_tk
from ascend_kernels.reference.paged_attention import paged_attention as ref_pa
from ascend_kernels.reference.reshape_and_cache import reshape_and_cache as ref_rac
from tests.conftest import poison_like
from tests.npu_fakes import ContractError, FakeTorchNpu

I32 = torch.int32
NEW, A2, A3 = "2.7.1.post4", "Ascend910B3", "Ascend910_9391"  # 26.0.0


@pytest.fixture
def gen(request):
    """A generator seeded from the test id (crc32, not hash(): stable across runs)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def npu(monkeypatch):
    """npu(version=..., soc=..., atb=...) installs a fresh FakeTorchNpu as torch_npu."""
    def install(version=NEW, soc=A2, atb=True, without_fia=False):
        fake = FakeTorchNpu(version, soc, atb, without_fia=without_fia)
        monkeypatch.setitem(sys.modules, "torch_npu", fake)
        return fake

    _npu.reset()
    yield install
    _npu.reset()


def randn(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen).to(dtype)


# ------------------------------------------------------------------- torch_npu version table

@pytest.mark.parametrize("version,release", [
    ("2.1.0.post10", _npu.OLDEST), ("2.5.1", (7, 0, 0)), ("2.6.0", (7, 1, 0)), ("2.6.0.post4", (7, 2, 0)),
    ("2.7.1", (7, 2, 0)), ("2.7.1.post2", (7, 3, 0)), ("2.9.0rc1", _npu.OLDEST), ("2.10.0+git1", (26, 0, 0)),
    ("2.12.0", (26, 0, 0)), ("garbage", _npu.OLDEST)])
def test_release_of(version, release):
    assert _npu.release_of(version) == release


# ------------------------------------------------------------------- reshape_and_cache

def _rac_case(gen, cache_dtype, key_dtype=None, tokens=11, heads=3, head_size=48, block_size=16, blocks=3):
    key_dtype = key_dtype or (torch.float16 if cache_dtype == torch.int8 else cache_dtype)
    key = randn(gen, tokens, heads, head_size, dtype=key_dtype)
    value = randn(gen, tokens, heads, head_size, dtype=key_dtype)
    shape = (blocks, block_size, heads, head_size)
    if cache_dtype == torch.int8:
        kc = torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)
        vc = torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)
    else:
        kc, vc = randn(gen, *shape, dtype=cache_dtype), randn(gen, *shape, dtype=cache_dtype)
    n = blocks * block_size
    slots = torch.randperm(n, generator=gen)[:tokens]
    scales = dict(k_scale=torch.tensor([0.02]), v_scale=torch.tensor([0.03])) if cache_dtype == torch.int8 else {}
    return key, value, kc, vc, slots, scales


def _rac_check(key, value, kc, vc, slots, scales):
    ek, ev = kc.clone(), vc.clone()
    ref_rac(key, value, ek, ev, slots, scales.get("k_scale"), scales.get("v_scale"))
    rac.reshape_and_cache(key, value, kc, vc, slots, scales.get("k_scale"), scales.get("v_scale"))
    assert torch.equal(kc, ek) and torch.equal(vc, ev)


@pytest.mark.parametrize("pattern", ["mixed", "all_padding", "none_padded"])
@pytest.mark.parametrize("cache_dtype", [torch.float16, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("slot_dtype", [torch.int32, torch.int64])
def test_rac_padding_stays_negative(npu, gen, pattern, cache_dtype, slot_dtype):
    fake = npu()
    key, value, kc, vc, slots, scales = _rac_case(gen, cache_dtype)
    if pattern == "mixed":  # vLLM padding, another negative, and a slot past the cache
        slots[[1, 4, 7]] = torch.tensor([-1, -9, kc.shape[0] * kc.shape[1] + 5])
    elif pattern == "all_padding":
        slots[:] = -1
    _rac_check(key, value, kc, vc, slots.to(slot_dtype), scales)
    assert fake.calls == ["_npu_reshape_and_cache"]


@pytest.mark.parametrize("key_dtype,cache_dtype", [(torch.float32, torch.bfloat16), (torch.float16, torch.bfloat16),
                                                   (torch.bfloat16, torch.float16)])
def test_rac_mixed_float_dtypes_are_cast_before_atb(npu, gen, key_dtype, cache_dtype):
    fake = npu()
    _rac_check(*_rac_case(gen, cache_dtype, key_dtype))
    assert fake.calls == ["_npu_reshape_and_cache"]  # the fake checked one dtype for all four


@pytest.mark.parametrize("what", ["fp32_cache", "combined_kv", "soc_310p", "old_release", "tokens_fill_cache"])
def test_rac_takes_reference(npu, gen, what):
    fake = npu(soc="Ascend310P3" if what == "soc_310p" else A2,
               version="2.1.0.post10" if what == "old_release" else NEW)
    key, value, kc, vc, slots, scales = _rac_case(gen, torch.float32 if what == "fp32_cache" else torch.bfloat16,
                                                  tokens=48 if what == "tokens_fill_cache" else 11)
    if what == "combined_kv":  # both caches are strided views of one [blocks, 2, bs, H, D] tensor
        kv = torch.stack([kc, vc], dim=1)
        kc, vc = kv[:, 0], kv[:, 1]
    path, reason = rac.route(key, value, kc, vc, slots)
    expect = {"fp32_cache": "fp16, bf16 or int8", "combined_kv": "contiguous", "soc_310p": "310P",
              "old_release": "7.0.0", "tokens_fill_cache": "48 tokens for 48 slots"}[what]
    assert path == "reference" and expect in reason
    _rac_check(key, value, kc, vc, slots, scales)
    assert fake.calls == []


def test_rac_atb_missing_takes_reference_with_reason(npu, gen):
    fake = npu(atb=False)
    case = _rac_case(gen, torch.float16)
    assert rac.route(*case[:5])[0] == "_npu_reshape_and_cache"
    _rac_check(*case)
    assert fake.calls == ["_npu_reshape_and_cache"]  # raised OSError, then the reference
    path, reason = rac.route(*case[:5])
    assert path == "reference" and "NNAL" in reason
    _rac_check(*_rac_case(gen, torch.float16))
    assert fake.calls == ["_npu_reshape_and_cache"]  # not tried again


def test_fake_rac_rejects_duplicates_and_strided_caches(npu, gen):
    fake = npu()
    key, value, kc, vc, slots, _ = _rac_case(gen, torch.float16, tokens=3)
    for bad in ([5, 5, -1], [5, -1, -1]):  # RAC: no repeated value, negative ones included
        with pytest.raises(ContractError, match="repeated"):
            fake._npu_reshape_and_cache(key, value, kc, vc, torch.tensor(bad, dtype=I32))
    with pytest.raises(ContractError, match="contiguous"):
        fake._npu_reshape_and_cache(key, value, kc.transpose(2, 3).contiguous().transpose(2, 3), vc,
                                    slots.to(I32))


# ------------------------------------------------------------------- paged_attention

def _paged_cache(gen, lens, block_size, kv_heads, head_size, dtype, spare):
    """(k cache, v cache, block table): each sequence's pages shuffled over the cache, `spare`
    pages no sequence uses, garbage table entries past each sequence's pages."""
    pages = [-(-int(n) // block_size) for n in lens]
    blocks = sum(pages) + spare
    kc = randn(gen, blocks, block_size, kv_heads, head_size, dtype=dtype)
    vc = randn(gen, blocks, block_size, kv_heads, head_size, dtype=dtype)
    perm = torch.randperm(blocks, generator=gen).to(I32)
    bt = torch.full((len(lens), max(pages) + 1), 10_000, dtype=I32)
    i = 0
    for b, n in enumerate(pages):
        bt[b, :n] = perm[i:i + n]
        i += n
    return kc, vc, bt


def _pa_case(gen, dtype, block_size, head_size, lens, heads=4, kv_heads=2):
    q = randn(gen, len(lens), heads, head_size, dtype=dtype)
    kc, vc, bt = _paged_cache(gen, lens, block_size, kv_heads, head_size, dtype, spare=2)
    return q, kc, vc, bt, torch.tensor(lens, dtype=I32)


def _pa_check(q, kc, vc, bt, lens, out=None, **kw):
    out = poison_like(q) if out is None else out
    scale = 1 / math.sqrt(q.shape[-1])
    pa.paged_attention(q, kc, vc, bt, lens, out, scale=scale, **kw)
    opts = {k: v for k, v in kw.items() if k in ("sliding_window", "softcap", "alibi_slopes")}
    expect = ref_pa(q, kc, vc, bt, lens, scale, compute_dtype=torch.float64, **opts)
    tol = 1e-5 if q.dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.double(), expect, atol=tol, rtol=tol)
    assert torch.equal(out[lens == 0].float(), torch.zeros_like(out[lens == 0]).float())


@pytest.mark.parametrize("block_size,head_size,soc,path", [
    (16, 64, A2, pa.ATB_PA), (16, 96, A3, pa.ATB_PA), (128, 128, A2, pa.ATB_PA), (128, 192, A3, pa.ATB_PA),
    (256, 256, A2, pa.ATB_PA), (256, 256, A3, pa.FIA), (256, 128, A2, pa.FIA), (16, 512, A2, pa.FIA),
    (128, 512, A3, pa.FIA), (24, 64, A2, "reference"), (24, 128, A3, "reference")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pa_paths_and_results(npu, gen, block_size, head_size, soc, path, dtype):
    fake = npu(soc=soc)
    case = _pa_case(gen, dtype, block_size, head_size, [block_size + 3, 0, 1, 2 * block_size, 5])
    got, reason = pa.route(*case)
    assert got == path, reason
    if path == "reference":
        assert f"block_size {block_size}" in reason
    _pa_check(*case, seq_lens_host=case[4].clone())
    assert fake.calls == ([] if path == "reference" else [path])


def test_pa_without_host_lengths_and_strided_out(npu, gen):
    fake = npu()
    q, kc, vc, bt, lens = _pa_case(gen, torch.float16, 32, 80, [40, 7, 64])
    out = poison_like(q.transpose(0, 1).contiguous()).transpose(0, 1)  # not contiguous
    assert pa.route(q, kc, vc, bt, lens, out)[0] == pa.ATB_PA
    _pa_check(q, kc, vc, bt, lens, out=out)
    assert fake.calls == [pa.ATB_PA]  # the fake saw a contiguous out


def test_pa_atb_missing_goes_to_fia(npu, gen):
    fake = npu(atb=False)
    case = _pa_case(gen, torch.bfloat16, 16, 64, [20, 3])
    _pa_check(*case)
    assert fake.calls == [pa.ATB_PA, pa.FIA]
    path, reason = pa.route(*case)
    assert path == pa.FIA and "NNAL" in reason


@pytest.mark.parametrize("what", ["softcap", "alibi", "window", "fp32", "combined_kv"])
def test_pa_takes_reference(npu, gen, what):
    fake = npu()
    q, kc, vc, bt, lens = _pa_case(gen, torch.float32 if what == "fp32" else torch.float16, 16, 64, [30, 9])
    kw = {"softcap": dict(softcap=5.0), "alibi": dict(alibi_slopes=torch.rand(4, generator=gen)),
          "window": dict(sliding_window=4)}.get(what, {})
    if what == "combined_kv":
        kv = torch.stack([kc, vc], dim=1)
        kc, vc = kv[:, 0], kv[:, 1]
    path, reason = pa.route(q, kc, vc, bt, lens, **kw)
    expect = {"softcap": "softcap", "alibi": "alibi", "window": "sliding_window", "fp32": "fp16/bf16",
              "combined_kv": "strided"}[what]
    assert path == "reference" and expect in reason
    _pa_check(q, kc, vc, bt, lens, **kw)
    assert fake.calls == []


@pytest.mark.parametrize("without_fia", [False, True])
def test_pa_release_before_atb_uses_fia_where_it_exists(npu, gen, without_fia):
    fake = npu(version="2.1.0.post10", without_fia=without_fia)
    case = _pa_case(gen, torch.float16, 16, 128, [17, 33])
    path, reason = pa.route(*case)
    assert path == ("reference" if without_fia else pa.FIA) and "7.0.0" in reason
    assert ("no npu_fused_infer_attention_score" in reason) == without_fia
    _pa_check(*case)
    assert fake.calls == ([] if without_fia else [pa.FIA])


def test_fake_pa_rejects_contract_violations(npu, gen):
    fake = npu()
    q, kc, vc, bt, lens = _pa_case(gen, torch.float16, 16, 64, [20, 3])
    args = dict(query=q, key_cache=kc, value_cache=vc, num_kv_heads=2, num_heads=4, scale_value=0.1,
                block_table=bt.clamp(max=kc.shape[0] - 1), context_lens=lens)
    with pytest.raises(ContractError, match="contiguous"):
        fake._npu_paged_attention(**args, out=torch.empty(4, 2, 64, dtype=q.dtype).transpose(0, 1))
    with pytest.raises(ContractError, match="context length 0"):
        fake._npu_paged_attention(**{**args, "context_lens": torch.tensor([20, 0], dtype=I32)},
                                  out=torch.empty_like(q))


# ------------------------------------------------------------------- flash_attention

def _fa_case(gen, lens_q, lens_k, heads, kv_heads, head_size, dtype=torch.bfloat16, block_size=None):
    cu = lambda lens: torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), dtype=I32)  # noqa: E731
    case = dict(q=randn(gen, sum(lens_q) + 2, heads, head_size, dtype=dtype), cu_seqlens_q=cu(lens_q),
                cu_seqlens_k=None, seqused_k=None, block_table=None)  # 2 query rows past the last sequence
    if block_size:
        case["k"], case["v"], bt = _paged_cache(gen, lens_k, block_size, kv_heads, head_size, dtype, spare=1)
        case.update(block_table=bt, seqused_k=torch.tensor(lens_k, dtype=I32))
    else:  # k/v: strided halves of one [T_k, 2, N_kv, D] tensor, 3 tokens past the last sequence
        kv = randn(gen, sum(lens_k) + 3, 2, kv_heads, head_size, dtype=dtype)
        case.update(k=kv[:, 0], v=kv[:, 1], cu_seqlens_k=cu(lens_k))
    return case


def _fa_args(c, wl, wr, softcap=0.0):
    return (c["q"], c["k"], c["v"], c["cu_seqlens_q"], c["cu_seqlens_k"], c["seqused_k"], c["block_table"],
            0.125, wl, wr, softcap)


def _fa_check(c, wl, wr, softcap=0.0):
    out = poison_like(c["q"])
    o, lse = fa.flash_attention(*_fa_args(c, wl, wr, softcap), out=out, return_lse=True)
    ro, rl = ref_fa.flash_attention(*_fa_args(c, wl, wr, softcap), out=poison_like(c["q"]).double(),
                                    return_lse=True, compute_dtype=torch.float64)
    n = int(c["cu_seqlens_q"][-1])
    assert o is out and out[n:].isnan().all()  # rows past the sequences stay untouched
    torch.testing.assert_close(o[:n].double(), ro[:n], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, rl, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("wl,wr,mode", [(-1, -1, 0), (-1, 0, 3), (24, 0, 4), (10, 5, 4), (-1, 6, 4), (9, -1, 4)])
@pytest.mark.parametrize("block_size", [None, 128, 256])
def test_fa_modes_within_contract(npu, gen, wl, wr, mode, block_size):
    fake = npu()
    c = _fa_case(gen, [20, 33, 0], [40, 33, 7], 4, 2, 128, block_size=block_size)
    assert fa.route(*_fa_args(c, wl, wr))[0] == fa.FIA
    _fa_check(c, wl, wr)
    assert fake.calls == [fa.FIA]
    assert fake.args["sparse_mode"] == mode and fake.args["paged"] == (block_size is not None)
    if mode == 4:
        assert fake.args["pre_tokens"] == (wl if wl >= 0 else 2147483647)
        assert fake.args["next_tokens"] == (wr if wr >= 0 else 2147483647)


@pytest.mark.parametrize("head_size,path", [(64, "reference"), (96, "reference"), (128, fa.FIA),
                                            (192, fa.FIA), (256, "reference"), (512, "reference")])
def test_fa_head_sizes(npu, gen, head_size, path):
    fake = npu()
    c = _fa_case(gen, [5, 9], [11, 9], 2, 1, head_size)
    got, reason = fa.route(*_fa_args(c, -1, 0))
    assert got == path and (path == fa.FIA or f"head_size 128 or 192, not {head_size}" in reason), reason
    _fa_check(c, -1, 0)
    assert fake.calls == ([] if path == "reference" else [fa.FIA])


@pytest.mark.parametrize("version,limited", [("2.6.0", True), ("2.6.0.post3", True), ("2.7.1.post2", False)])
def test_fia_tnd_token_limit_before_7_3(npu, version, limited):
    """D71/D72: T <= 1M in TND (lengths checked on the host values; the tensors stay tiny)."""
    npu(version=version)
    q = torch.empty(8, 4, 192, dtype=torch.bfloat16)
    reason = fia.npu_fused_infer_attention_score_reason("TND", q, q, num_kv_heads=4, seq_q=[600_000, 400_001],
                                                        seq_kv=[600_001, 400_002])
    assert (reason is not None and "T <= 1M" in reason) == limited, reason


@pytest.mark.parametrize("layout,blocks", [("BSH", 1 << 17), ("TND", 1 << 17), ("BSH", (1 << 17) - 1)])
def test_fia_caches_past_int32_elements_take_the_reference(npu, layout, blocks):
    """D26: the product of key's and value's dimensions fits int32 (a meta cache: no memory)."""
    npu(version="2.7.1.post2", soc=A3)
    q = torch.empty(4, 8, 128, dtype=torch.bfloat16)
    cache = torch.empty(blocks, 128, 1, 128, dtype=torch.bfloat16, device="meta")  # 2^31 elements at 2^17 blocks
    reason = fia.npu_fused_infer_attention_score_reason(layout, q, cache, num_kv_heads=1, block_size=128,
                                                        seq_q=[1] * 4, seq_kv=[128] * 4)
    assert (reason is not None and "fits int32" in reason) == (cache.numel() > fia.INT_MAX), reason
    if cache.numel() > fia.INT_MAX:
        fake = npu(version="2.7.1.post2", soc=A3)
        with pytest.raises(ContractError, match="fits int32"):
            fake.npu_fused_infer_attention_score(q.view(4, 1, 1024), cache.view(blocks, 128, 128),
                                                 cache.view(blocks, 128, 128), block_table=None)


def test_fa_paged_blocks_shared_past_the_cache_take_the_reference(npu, gen):
    fake = npu(soc=A3)
    c = _fa_case(gen, [3, 17], [150, 150], 4, 4, 128, dtype=torch.float16, block_size=128)
    c["block_table"][1] = c["block_table"][0]  # a shared prefix: 4 blocks by the sum, 3 in the cache
    c["k"], c["v"] = c["k"][:3].contiguous(), c["v"][:3].contiguous()
    c["block_table"] = c["block_table"].clamp(max=2)
    path, reason = fa.route(*_fa_args(c, -1, 0))
    assert path == "reference" and "block counts" in reason
    _fa_check(c, -1, 0)
    assert fake.calls == []


@pytest.mark.parametrize("block_size,path", [(16, "reference"), (24, "reference"), (128, fa.FIA), (256, fa.FIA)])
def test_fa_paged_block_sizes(npu, gen, block_size, path):
    fake = npu(soc=A3)
    c = _fa_case(gen, [3, 17], [150, 17], 4, 4, 128, dtype=torch.float16, block_size=block_size)
    got, reason = fa.route(*_fa_args(c, -1, 0))
    assert got == path and (path == fa.FIA or f"block_size {block_size}" in reason), reason
    _fa_check(c, -1, 0)
    assert fake.calls == ([] if path == "reference" else [fa.FIA])
    if path == fa.FIA:  # FIA does not check block ids: entries past a sequence's pages arrive as 0
        pages = (c["seqused_k"] + block_size - 1) // block_size
        past = torch.arange(c["block_table"].shape[1])[None, :] >= pages[:, None]
        assert bool(past.any()) and bool((fake.args["block_table"][past] == 0).all())


@pytest.mark.parametrize("version,case,path,why", [
    ("2.6.0", dict(head_size=192, kv_heads=4), fa.FIA, None),                        # 7.1.0: D 192, no GQA
    ("2.6.0", dict(head_size=128, kv_heads=4), "reference", "head_size 192, not 128"),
    ("2.6.0", dict(head_size=192, kv_heads=2), "reference", "no GQA"),
    ("2.6.0", dict(head_size=192, kv_heads=4, dtype=torch.float16), "reference", "bf16 only"),
    ("2.6.0", dict(head_size=192, kv_heads=4, wl=8), "reference", "sparse_mode 4"),
    ("2.6.0", dict(head_size=192, kv_heads=4, block_size=128), "reference", "no page attention"),
    ("2.6.0", dict(head_size=192, kv_heads=4, lens_k=[5, 9]), "reference", "query length < its key length"),
    ("2.6.0.post3", dict(head_size=128, kv_heads=2), fa.FIA, None),                  # 7.2.0: GQA, D 128
    ("2.6.0.post3", dict(head_size=128, kv_heads=2, wl=8), "reference", "sparse_mode 4"),
    ("2.7.1.post2", dict(head_size=128, kv_heads=2, wl=8, block_size=128,
                         dtype=torch.float16), fa.FIA, None),                           # 7.3.0: all
    ("2.5.1", dict(head_size=128, kv_heads=4), "reference", "from 7.1.0"),
])
def test_fa_torch_npu_version_gates(npu, gen, version, case, path, why):
    fake = npu(version=version)
    case = dict(case)
    wl = case.pop("wl", -1)
    c = _fa_case(gen, [5, 9], case.pop("lens_k", [11, 10]), 4, case.pop("kv_heads"), case.pop("head_size"), **case)
    got, reason = fa.route(*_fa_args(c, wl, 0))
    assert got == path and (why is None or why in reason), reason
    _fa_check(c, wl, 0)
    assert fake.calls == ([] if path == "reference" else [fa.FIA])


@pytest.mark.parametrize("what", ["softcap", "seqused_varlen", "empty_row", "fp32", "soc_310p"])
def test_fa_takes_reference(npu, gen, what):
    fake = npu(soc="Ascend310P3" if what == "soc_310p" else A2)
    c = _fa_case(gen, [20, 33], [10 if what == "empty_row" else 40, 33], 2, 1, 128,
                 dtype=torch.float32 if what == "fp32" else torch.bfloat16)
    if what == "seqused_varlen":
        c["seqused_k"] = torch.tensor([30, 20], dtype=I32)
    softcap = 5.0 if what == "softcap" else 0.0
    path, reason = fa.route(*_fa_args(c, -1, 0, softcap))
    expect = {"softcap": "softcap", "seqused_varlen": "seqused_k", "empty_row": "sees no key",
              "fp32": "fp16/bf16", "soc_310p": "310P"}[what]
    assert path == "reference" and expect in reason
    _fa_check(c, -1, 0, softcap)
    assert fake.calls == []


# ------------------------------------------------------------------- topk_topp_sampling

def _probs_ref(x, **kw):
    return ref_tk.filtered(x, kw.get("top_k"), kw.get("top_p"), kw.get("temperature"))[0]


def test_topk_within_contract(npu, gen):
    fake = npu()
    x = randn(gen, 6, 41) * 2
    kw = dict(top_k=torch.tensor([3, 8, 1, 0, 60, 41]), top_p=torch.tensor([0.9, 0.6, 1.0, 0.0, 0.7, 1.5]),
              temperature=torch.tensor([1.0, 0.7, 1.0, 1.3, 0.0, 2.0]))
    seeds = torch.arange(6, dtype=torch.int64) * 7919 + 3
    assert tk.route(x, **kw)[0] == tk.TOPK_TOPP
    tok, probs = tk.topk_topp_sampling(x, seeds=seeds, return_probs=True, **kw)
    assert fake.calls == [tk.TOPK_TOPP]
    torch.testing.assert_close(probs.double(), _probs_ref(x, **kw), atol=1e-6, rtol=1e-5)
    assert (probs.gather(1, tok[:, None]) > 0).all() and int(tok[4]) == int(x[4].argmax())
    ref_tok = ref_tk.topk_topp_sampling(x, seeds=seeds, **kw)
    assert torch.equal(tok, ref_tok)


@pytest.mark.parametrize("what", ["k_over_1024", "off_rows_big_vocab", "no_top_k", "soc_310p", "release_7_0"])
def test_topk_takes_reference(npu, gen, what):
    fake = npu(soc="Ascend310P3" if what == "soc_310p" else A2, version="2.5.1" if what == "release_7_0" else NEW)
    vocab = 1500 if what in ("k_over_1024", "off_rows_big_vocab") else 50
    x = randn(gen, 3, vocab)
    top_k = {"k_over_1024": torch.tensor([5, 1100, 7]), "off_rows_big_vocab": torch.tensor([5, 0, 7]),
             "no_top_k": None}.get(what, 4)
    path, reason = tk.route(x, top_k)
    expect = {"k_over_1024": "[1, 1024]", "off_rows_big_vocab": "[1, 1024]", "no_top_k": "no top_k",
              "soc_310p": "A2/A3", "release_7_0": "7.1.0"}[what]
    assert path == "reference" and expect in reason
    tok, probs = tk.topk_topp_sampling(x, top_k=top_k, top_p=0.8, seeds=torch.arange(3), return_probs=True)
    torch.testing.assert_close(probs.double(), _probs_ref(x, top_k=top_k, top_p=0.8), atol=1e-6, rtol=1e-5)
    assert fake.calls == []


def test_fake_top_k_top_p_sort_is_stable(npu):
    fake = npu()
    # ascending stable order of [1, 1, 0] is idx 2, 0, 1; cumulative 0.155, 0.577, 1.0 <= 0.6 drops 2 and 0
    out = fake.npu_top_k_top_p(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0.4]), torch.tensor([3], dtype=I32))
    assert out[0, 1] == 1.0 and out[0, 0] == float("-inf") and out[0, 2] == float("-inf")
    with pytest.raises(ContractError, match="int32"):
        fake.npu_top_k_top_p(torch.zeros(1, 3), torch.tensor([0.4]), torch.tensor([3]))


@pytest.mark.parametrize("name", ["reshape_and_cache", "paged_attention", "flash_attention",
                                  "topk_topp_sampling"])
def test_each_op_reports_its_torch_npu_route(npu, name):
    """What explain appends on Ascend: the op's ATB fallback names the torch_npu operator (or
    the reference) the wrapper takes for these arguments, and why."""
    from ascend_kernels.bench import problems
    from ascend_kernels.launcher import op

    npu()
    defn = op.get(name)
    shape = {"reshape_and_cache": dict(tokens=5, kv_heads=2, head_size=128, block_size=16),
             "paged_attention": dict(seqs=2, heads=4, kv_heads=2, head_size=128, block_size=16, context=40),
             "flash_attention": dict(batch=2, seqlen=16, heads=4, kv_heads=2, head_size=128),
             "topk_topp_sampling": dict(batch=3, vocab=100)}[name]
    p = problems.make(name, shape, "cpu", torch.float16)
    path, reason = defn.fallbacks["fallback_atb"].route(p)
    assert isinstance(path, str) and path and isinstance(reason, str) and reason


# ------------------------------------------------------------------- quantized (int8) KV caches

def test_rac_int8_per_head_scales_through_atb(npu, gen):
    fake = npu()
    key, value, kc, vc, slots, _ = _rac_case(gen, torch.int8)
    scales = dict(k_scale=0.01 + 0.03 * torch.rand(3, generator=gen), v_scale=0.01 + 0.03 * torch.rand(3, generator=gen))
    _rac_check(key, value, kc, vc, slots, scales)  # quantized per kv head before ATB
    assert fake.calls == ["_npu_reshape_and_cache"]


def _pa_int8_case(gen, per_head, block_size=128, lens=(130, 0, 7)):
    q, kc, vc, bt, lens = _pa_case(gen, torch.bfloat16, block_size, 128, list(lens))
    kq = torch.randint(-128, 128, kc.shape, generator=gen, dtype=torch.int8)
    vq = torch.randint(-128, 128, vc.shape, generator=gen, dtype=torch.int8)
    n = kc.shape[2] if per_head else 1
    scales = dict(k_scale=0.01 + 0.02 * torch.rand(n, generator=gen), v_scale=0.01 + 0.02 * torch.rand(n, generator=gen))
    return (q, kq, vq, bt, lens), scales


def _pa_int8_check(case, scales):
    q, kq, vq, bt, lens = case
    out = poison_like(q)
    pa.paged_attention(q, kq, vq, bt, lens, out, scale=0.08, **scales)
    expect = ref_pa(q, kq, vq, bt, lens, 0.08, compute_dtype=torch.float64, **scales)
    torch.testing.assert_close(out.double(), expect, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("per_head", [False, True])
def test_pa_int8_cache_through_fia_antiquant(npu, gen, per_head):
    """int8 caches go to FIA with KV-separated antiquant scales in the query's dtype: mode 0,
    shape (1,) per tensor; mode 2, shape (KV_N,) per kv head."""
    fake = npu()
    case, scales = _pa_int8_case(gen, per_head)
    path, reason = pa.route(*case, **scales)
    assert path == pa.FIA and "no dequant inputs" in reason
    _pa_int8_check(case, scales)
    assert fake.calls == [pa.FIA] and fake.args["antiquant_mode"] == (2 if per_head else 0)


@pytest.mark.parametrize("what", ["release 7.1.0", "pages of 16", "mixed scales", "310P"])
def test_pa_int8_cache_takes_the_reference_with_reason(npu, gen, what):
    fake = npu(version="2.6.0" if what == "release 7.1.0" else NEW, soc="Ascend310P3" if what == "310P" else A2)
    case, scales = _pa_int8_case(gen, False, block_size=16 if what == "pages of 16" else 128)
    if what == "mixed scales":
        scales["v_scale"] = scales["v_scale"].expand(case[1].shape[2]).clone()
    path, reason = pa.route(*case, **scales)
    expect = {"release 7.1.0": "7.2.0", "pages of 16": "multiple of 32", "mixed scales": "different shapes",
              "310P": "A2/A3"}[what]
    assert path == "reference" and "int8 cache" in reason and expect in reason, reason
    _pa_int8_check(case, scales)
    assert fake.calls == []


def test_pa_fia_host_limits_take_the_reference(npu, gen):
    """Sequences sharing blocks (prefix caching) can need more blocks than the cache holds, which
    FIA's page attention forbids: such a call takes the reference."""
    fake = npu(atb=False)
    _pa_check(*_pa_case(gen, torch.bfloat16, 16, 64, [40, 3]))  # within the limits: FIA
    assert fake.calls == [pa.ATB_PA, pa.FIA]
    q, kc, vc, bt, lens = _pa_case(gen, torch.bfloat16, 16, 64, [40, 40])
    bt[1] = bt[0]  # both sequences read the same 3 blocks: 6 > the 5 blocks of the cache
    kc, vc = kc[:5].contiguous(), vc[:5].contiguous()
    fake.calls.clear()
    _pa_check(q, kc, vc, bt.clamp(max=4), lens)
    assert fake.calls == []


def test_fake_fia_rejects_antiquant_contract_violations(npu, gen):
    fake = npu()
    (q, kq, vq, bt, lens), _ = _pa_int8_case(gen, False, lens=(130, 7))
    b, n, d = q.shape
    args = dict(actual_seq_lengths_kv=lens.tolist(), num_heads=n, num_key_value_heads=2, scale=0.1,
                input_layout="BSH", block_table=bt.clamp(max=kq.shape[0] - 1), block_size=128)
    qs, ks, vs = q.reshape(b, 1, n * d), kq.view(kq.shape[0], 128, -1), vq.view(vq.shape[0], 128, -1)
    one = torch.tensor([0.02], dtype=q.dtype)
    fake.npu_fused_infer_attention_score(qs, ks, vs, **args, key_antiquant_scale=one, value_antiquant_scale=one)
    bad = [(dict(key_antiquant_scale=one), "both or neither"),
           (dict(key_antiquant_scale=one.float(), value_antiquant_scale=one.float()), "query's dtype"),
           (dict(key_antiquant_scale=one, value_antiquant_scale=one, key_antiquant_mode=2, value_antiquant_mode=2),
            "shape"),
           (dict(key_antiquant_scale=one, value_antiquant_scale=one, value_antiquant_mode=2), "one antiquant mode"),
           (dict(), "both or neither")]
    for kw, match in bad:
        with pytest.raises(ContractError, match=match):
            fake.npu_fused_infer_attention_score(qs, ks, vs, **args, **kw)
    with pytest.raises(ContractError, match="32-aligned"):
        fake.npu_fused_infer_attention_score(qs, ks.reshape(-1, 16, ks.shape[2]), vs.reshape(-1, 16, vs.shape[2]),
                                             **{**args, "block_size": 16, "block_table": torch.zeros(b, 9, dtype=I32)},
                                             key_antiquant_scale=one, value_antiquant_scale=one)
    with pytest.raises(ContractError, match="sum of every batch"):
        fake.npu_fused_infer_attention_score(qs, ks[:1], vs[:1], **{**args, "block_table": torch.zeros(b, 2, dtype=I32)},
                                             key_antiquant_scale=one, value_antiquant_scale=one)
