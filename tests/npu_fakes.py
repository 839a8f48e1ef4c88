"""Strict fake torch_npu for the fallback_atb tests (there is no Ascend NPU here).

Each fake operator raises ContractError on every documented violation of its contract and
otherwise computes the documented result on the tensors it gets (CPU in the CI lanes). Points the
docs leave open (context length 0, query lengths not summing to T, rows that see no key) raise
too: the wrappers must not depend on them. Every rule names its source; abbreviations:

  OP   = github.com/Ascend/op-plugin
  ATBC = OP op_plugin/utils/custom_functions/atb/AtbCommon.cpp (ParamSetter::Input makes inputs
         contiguous; Output() -> AtTensor2AtbTensor TORCH_CHECKs is_contiguous; CPU tensors go to
         ATB as hostData)
  ATBD = OP op_plugin/python/atb/_atb_api_docs.py, entry _npu_paged_attention_v2 ("规格约束" of
         ATB PagedAttention; _npu_paged_attention runs the same operation, PagedAttentionAtb.cpp)
  ATBO = OP op_plugin/python/atb/_atb_ops.py (API_LIST; OSError when libatb.so is missing)
  RAC  = CANN ATB ReshapeAndCacheOperation docs (hiascend.com ascendtbapi ascendtb_01_0073 /
         _0089 / _0242): one dtype fp16/bf16/int8 for key, value, caches; int32 slotMapping in
         (-num_blocks*block_size, num_blocks*block_size), no duplicates, negative = no copy
  FIA  = OP docs/zh/custom_APIs/torch_npu/torch_npu-npu_fused_infer_attention_score.md (26.1.0);
         FIA71/FIA72 = docs/context/ of the same name on branches 7.1.0 / 7.2.0
  TKP  = OP docs/zh/custom_APIs/torch_npu/torch_npu-npu_top_k_top_p.md (26.1.0)
  YAML = OP op_plugin/config/op_plugin_functions.yaml (per branch: which operators exist)
  SOC  = Ascend/pytorch torch_npu/csrc/core/npu/NpuVariables.h (SocVersion numbers)

Host vs device: arguments documented as device tensors must be on `device` (the device the test
runs on: "cpu" in the CPU lanes, where host and device coincide, so only the host-side rules --
CPU tensors, Python int lists -- bite there).
"""
from __future__ import annotations

import types

import torch

from ascend_kernels.fallback_atb._npu import release_of
from ascend_kernels.reference.flash_attention import flash_attention as ref_flash, visible_mask
from ascend_kernels.reference.paged_attention import paged_attention as ref_paged

SOC_VERSIONS = {  # SOC
    "Ascend310P3": 202, "Ascend910B1": 220, "Ascend910B2": 221, "Ascend910B3": 223,
    "Ascend910B4": 224, "Ascend910_9391": 250, "Ascend910_9382": 253, "Ascend950": 260,
}
INT_MAX = 2147483647
HALF = (torch.float16, torch.bfloat16)


class ContractError(AssertionError):
    """A call outside the operator's documented contract."""


def need(cond, what: str) -> None:
    if not cond:
        raise ContractError(what)


class FakeTorchNpu(types.ModuleType):
    def __init__(self, version: str = "2.7.1.post4", soc: str = "Ascend910B3", atb: bool = True,
                 device: str = "cpu", without_fia: bool = False):
        super().__init__("torch_npu")
        self.__version__ = version
        self.rel = release_of(version)
        self.soc = soc
        self.family = {20: "310P", 22: "A2", 25: "A3", 26: "A5"}[SOC_VERSIONS[soc] // 10]
        self.atb = atb
        self.device = device
        self.calls: list[str] = []
        self.npu = types.SimpleNamespace(get_soc_version=lambda: SOC_VERSIONS[soc])
        self.args: dict = {}
        self.without_fia = without_fia  # YAML: 6.0.rc1 / 6.0.rc2 have no npu_fused_infer_attention_score

    def __getattribute__(self, name):
        if name == "npu_fused_infer_attention_score" and object.__getattribute__(self, "without_fia"):
            raise AttributeError(name)
        return super().__getattribute__(name)

    # -- shared checks --------------------------------------------------------------------------
    def _dev(self, t, name):
        need(isinstance(t, torch.Tensor) and t.device.type == self.device, f"{name} must be a device tensor")

    def _host(self, t, name):
        need(isinstance(t, torch.Tensor) and t.device.type == "cpu", f"{name} must be a host (CPU) tensor")

    def _atb(self, name):
        self.calls.append(name)
        if not self.atb:  # ATBO: _register_atb_extensions re-raises the load error on every call
            raise OSError(2, "libatb.so: cannot open shared object file. Please check that the "
                             "nnal package is installed.")
        need(self.rel >= (7, 0, 0), f"{name} is absent before 7.0.0 (ATBO API_LIST)")

    # -- ATB ReshapeAndCache ----------------------------------------------------------------------
    def _npu_reshape_and_cache(self, key, value, key_cache, value_cache, slot_indices):
        self._atb("_npu_reshape_and_cache")
        for n, t in (("key", key), ("value", value), ("key_cache", key_cache),
                     ("value_cache", value_cache), ("slot_indices", slot_indices)):
            self._dev(t, n)
        dt = {key.dtype, value.dtype, key_cache.dtype, value_cache.dtype}
        need(len(dt) == 1 and key.dtype in HALF + (torch.int8,), f"RAC: one dtype fp16/bf16/int8, got {dt}")
        need(key_cache.is_contiguous() and value_cache.is_contiguous(), "ATBC: outputs (caches) must be contiguous")
        need(key.dim() == 3 and value.dim() == 3 and key_cache.dim() == 4 and value_cache.dim() == 4, "RAC: shapes")
        need(slot_indices.dtype == torch.int32 and slot_indices.dim() == 1, "RAC: slotMapping int32 [num_tokens]")
        need(key.shape[0] == value.shape[0] == slot_indices.numel(), "RAC: one slot per token")
        need(key.shape[1:] == key_cache.shape[2:] and value.shape[1:] == value_cache.shape[2:], "RAC: heads/head_size")
        n = key_cache.shape[0] * key_cache.shape[1]
        s = slot_indices.long()
        need(bool(((s > -n) & (s < n)).all()), "RAC: slot out of (-num_slots, num_slots)")
        need(s.unique().numel() == s.numel(), "RAC: repeated slot values (negative ones too)")
        keep = s >= 0  # RAC: a negative slot moves nothing
        key_cache.view(n, *key_cache.shape[2:])[s[keep]] = key[keep]
        value_cache.view(n, *value_cache.shape[2:])[s[keep]] = value[keep]

    # -- ATB PagedAttention -----------------------------------------------------------------------
    def _npu_paged_attention(self, query, key_cache, value_cache, num_kv_heads, num_heads,
                             scale_value, block_table, context_lens, out, *, workspace=None):
        self._atb("_npu_paged_attention")
        need(self.family in ("A2", "A3"), "ATBD: ND caches on A2/A3; Atlas inference takes NZ")
        for n, t in (("query", query), ("key_cache", key_cache), ("value_cache", value_cache),
                     ("block_table", block_table), ("out", out)):
            self._dev(t, n)
        self._host(context_lens, "context_lens")  # ATBD: context_lens int array; op-plugin test passes a CPU tensor
        need(query.dtype in HALF and key_cache.dtype == value_cache.dtype == query.dtype, "ATBD: fp16/bf16, one dtype")
        need(out.dtype == query.dtype and out.shape == query.shape, "ATBD: out [num_tokens, num_head, head_size_v]")
        need(out.is_contiguous(), "ATBC: out must be contiguous")
        need(key_cache.is_contiguous() and value_cache.is_contiguous(), "caches contiguous (ATBC copies them otherwise)")
        b, nh, hd = query.shape
        nb, bs, kvh, _ = key_cache.shape
        need(nh == num_heads and kvh == num_kv_heads and num_heads % num_kv_heads == 0, "ATBD: heads, GQA divisor")
        if bs == 256 and hd == 256:
            need(self.family == "A2", "ATBD: block_size = head_size = 256 only on A2")
        else:
            need(bs % 16 == 0 and bs <= 128, "ATBD: block_size % 16 == 0 and <= 128")
        need(0 < hd <= 256, "ATBD: head_size in (0, 256]")
        need(block_table.dtype == torch.int32 and block_table.shape[0] == b, "ATBD: block_table int32 [batch, max_blocks]")
        need(context_lens.dtype == torch.int32 and context_lens.shape == (b,), "ATBD: context_lens int32 [batch]")
        lens = context_lens.to(torch.int64)
        need(bool((lens > 0).all()), "context length 0: undocumented, must not be relied on")
        need(bool((lens <= block_table.shape[1] * bs).all()), "context longer than the table")
        used = torch.arange(block_table.shape[1])[None, :] < ((lens + bs - 1) // bs)[:, None]
        need(bool(((block_table[used] >= 0) & (block_table[used] < nb)).all()), "ATBD: block ids in [0, num_blocks)")
        out.copy_(ref_paged(query, key_cache, value_cache, block_table, lens.to(query.device), scale_value))

    # -- npu_fused_infer_attention_score ---------------------------------------------------------
    def npu_fused_infer_attention_score(self, query, key, value, *, atten_mask=None,
                                        actual_seq_lengths=None, actual_seq_lengths_kv=None,
                                        block_table=None, num_heads=1, scale=1.0,
                                        pre_tokens=INT_MAX, next_tokens=INT_MAX, input_layout="BSH",
                                        num_key_value_heads=0, sparse_mode=0, inner_precise=0,
                                        block_size=0, softmax_lse_flag=False, key_antiquant_scale=None,
                                        value_antiquant_scale=None, key_antiquant_mode=0,
                                        value_antiquant_mode=0, **unused):
        self.calls.append("npu_fused_infer_attention_score")
        self.args = dict(sparse_mode=sparse_mode, pre_tokens=pre_tokens, next_tokens=next_tokens,
                         layout=input_layout, paged=block_table is not None, block_table=block_table,
                         antiquant_mode=key_antiquant_mode if key_antiquant_scale is not None else None)
        need(not unused, f"arguments this fake does not model: {sorted(unused)}")
        need(self.family in ("A2", "A3"), "FIA: A2/A3")
        need(key.numel() <= INT_MAX and value.numel() <= INT_MAX,
             "FIA: the product of key's and value's dimensions fits int32")
        for n, t in (("query", query), ("key", key), ("value", value)):
            self._dev(t, n)
            need(t.is_contiguous(), f"FIA: {n} must be contiguous")
        int8_kv = key.dtype == torch.int8
        need(query.dtype in HALF and key.dtype == value.dtype and (key.dtype == query.dtype or int8_kv),
             "FIA: fp16/bf16 q with k/v alike, or int8 k/v (antiquant)")
        if int8_kv:  # FIA72/FIA kv伪量化参数分离: the per-tensor and per-tensor + per-head rows
            need(self.rel >= (7, 2, 0), "FIA71: no per-tensor / per-head KV antiquant table before 7.2.0")
            need(key_antiquant_scale is not None and value_antiquant_scale is not None,
                 "FIA: int8 K/V need key/value_antiquant_scale (both or neither)")
            need(key_antiquant_mode == value_antiquant_mode and key_antiquant_mode in (0, 2),
                 "FIA: one antiquant mode for key and value; this fake models 0 (per tensor) and 2 (per head)")
            want = (1,) if key_antiquant_mode == 0 else ((num_key_value_heads or num_heads),)
            for n, t in (("key_antiquant_scale", key_antiquant_scale), ("value_antiquant_scale", value_antiquant_scale)):
                self._dev(t, n)
                need(t.shape == want and t.dtype == query.dtype,
                     f"FIA: {n} of shape {want} in the query's dtype (mode {key_antiquant_mode})")
        else:
            need(key_antiquant_scale is None and value_antiquant_scale is None,
                 "antiquant scales with fp16/bf16 K/V: not this fake's model")
        kvh = num_key_value_heads or num_heads
        need(num_heads % kvh == 0 and num_heads // kvh <= 64, "FIA: num_key_value_heads divides num_heads, ratio <= 64")
        need(num_heads <= 256, "FIA: N <= 256")
        for name, lst in (("actual_seq_lengths", actual_seq_lengths), ("actual_seq_lengths_kv", actual_seq_lengths_kv)):
            need(lst is None or (isinstance(lst, list) and all(type(x) is int for x in lst)),
                 f"YAML: {name} is SymInt[] (host ints)")
        paged = block_table is not None
        if paged:
            self._dev(block_table, "block_table")
            need(block_table.dtype == torch.int32 and block_table.dim() == 2, "FIA: block_table int32, 2-D")
            need(0 < block_size <= 512 and block_size % (32 if int8_kv else 16) == 0,
                 "FIA (Q_S=1 page attention): block_size <= 512, 16-aligned (fp16/bf16), 32-aligned (int8)")
            need(key.dim() == 3 and key.shape[1] == block_size and key.shape == value.shape,
                 "FIA: paged key/value (blocknum, blocksize, H), one shape")
            need(key.shape[2] <= 65535, "FIA: KV_N * D <= 65535 in (blocknum, blocksize, H)")
            need(actual_seq_lengths_kv is not None, "FIA: page attention needs actual_seq_lengths_kv")
        if input_layout == "TND":
            need(not int8_kv, "FIA: page attention takes no antiquant at Q_S > 1")
            return self._tnd(query, key, value, atten_mask, actual_seq_lengths, actual_seq_lengths_kv,
                             block_table, num_heads, kvh, scale, pre_tokens, next_tokens,
                             sparse_mode, block_size, softmax_lse_flag)
        need(input_layout == "BSH" and paged and query.dim() == 3 and query.shape[1] == 1,
             "this fake models BSH only as paged decode (Q_S = 1)")
        b, _, h = query.shape
        d = h // num_heads
        need(d <= 512, "FIA (Q_S=1): D <= 512")
        need(b <= 65536, "FIA (Q_S=1): B <= 65536")
        need(len(actual_seq_lengths_kv) == b and block_table.shape[0] == b, "FIA: one kv length and table row per batch")
        lens = torch.tensor(actual_seq_lengths_kv)
        need(bool((lens > 0).all()), "context length 0: undocumented, must not be relied on")
        need(int(lens.max()) <= 262144, "FIA (Q_S=1): S <= 262144")
        need(key.shape[0] >= int(((lens + block_size - 1) // block_size).sum()),
             "FIA (page attention): blocknum >= the sum of every batch's block count")
        need(bool((lens <= block_table.shape[1] * block_size).all()), "FIA: block_table second dim >= maxBlockNumPerSeq")
        used = torch.arange(block_table.shape[1])[None, :] < ((lens + block_size - 1) // block_size)[:, None]
        need(bool(((block_table[used] >= 0) & (block_table[used] < key.shape[0])).all()),
             "FIA: block ids are not validated, the caller must keep them valid")
        kc = key.view(key.shape[0], block_size, kvh, d)
        vc = value.view(value.shape[0], block_size, kvh, d)
        # FIA: sparse_mode / pre_tokens / next_tokens are ignored when Q_S is 1
        scales = dict(k_scale=key_antiquant_scale.float(), v_scale=value_antiquant_scale.float()) if int8_kv else {}
        o = ref_paged(query.view(b, num_heads, d), kc, vc, block_table, lens.to(query.device), scale, **scales)
        return o.to(query.dtype).view(b, 1, h), torch.zeros(1)

    def _tnd(self, query, key, value, mask, seq_q, seq_kv, block_table, nh, kvh, scale, pre, nxt,
             sparse_mode, block_size, lse_flag):
        rel = self.rel
        paged = block_table is not None
        t, n, d = query.shape
        need(n == nh, "FIA: num_heads = query N")
        need(rel >= (7, 1, 0), "FIA71: TND documented from 7.1.0")
        need(d in ((192,) if rel < (7, 2, 0) else (128, 192)), "FIA71: D = 192; FIA72/FIA: D = 128 or 192")
        if rel < (7, 3, 0):
            need(query.dtype == torch.bfloat16, "FIA71/FIA72: TND takes bf16 only")
            need(not paged, "FIA71/FIA72: TND has no page attention")
            need(sparse_mode in (0, 3), "FIA71: TND sparse 0 or 3 (band from 7.3.0 here)")
        if rel < (7, 2, 0):
            need(nh == kvh and nh in (2, 4, 8, 16, 32, 64, 128), "FIA71: Q_N = KV_N in {2..128}")
        if rel < (7, 3, 0):
            need(t <= 1_000_000, "FIA71/FIA72: TND T <= 1M")
        if paged:  # FIA Q_S>1 page attention: 128..512, multiple of 128 (the TND line allows more)
            need(block_size % 128 == 0 and 128 <= block_size <= 512, "FIA: TND page block_size 128..512 by 128")
        need(sparse_mode in (0, 3, 4), "FIA: sparse_mode 0/3/4 used here")
        if sparse_mode in (3, 4):
            need(mask is not None and mask.shape == (2048, 2048) and mask.dtype in (torch.bool, torch.int8, torch.uint8),
                 "FIA: sparse 3/4 need the 2048 x 2048 mask")
            need(torch.equal(mask.bool().cpu(), torch.triu(torch.ones(2048, 2048, dtype=torch.bool), 1)),
                 "FIA: the compressed causal mask (1 = masked)")
        else:
            need(mask is None, "sparse 0 with a mask applies it as is: not used here")
        need(seq_q is not None and seq_kv is not None, "FIA: TND needs both length lists")
        b = len(seq_q)
        need(b <= 4096 and (paged or len(seq_kv) == b), "FIA: at most 4096 sequences, one kv entry each")
        need(all(x <= y for x, y in zip([0] + seq_q, seq_q)), "FIA: actual_seq_lengths cumulative, non-decreasing")
        need(seq_q[-1] == t, "query lengths not summing to T: undocumented, must not be relied on")
        sq = [y - x for x, y in zip([0] + seq_q, seq_q)]
        if paged:  # per sequence, as vllm-ascend passes it (cumulative vs per sequence: unconfirmed)
            need(len(seq_kv) == b and block_table.shape[0] == b, "FIA: one kv length and table row per batch")
            sk = list(seq_kv)
            need(all(x <= block_table.shape[1] * block_size for x in sk), "FIA: table covers every sequence")
            need(key.shape[0] >= sum(-(-x // block_size) for x in sk),
                 "FIA (page attention): blocknum >= the sum of every batch's block count")
            used = torch.arange(block_table.shape[1])[None, :] < torch.tensor([-(-x // block_size) for x in sk])[:, None]
            need(bool(((block_table[used] >= 0) & (block_table[used] < key.shape[0])).all()),
                 "FIA: block ids are not validated, the caller must keep them valid")
            k4 = key.view(key.shape[0], block_size, kvh, d)
            v4 = value.view(value.shape[0], block_size, kvh, d)
        else:
            need(all(x <= y for x, y in zip([0] + seq_kv, seq_kv)), "FIA: actual_seq_lengths_kv cumulative")
            need(seq_kv[-1] == key.shape[0] and key.shape == value.shape and key.shape[1] == kvh,
                 "key lengths not summing to T_k: undocumented")
            sk = [y - x for x, y in zip([0] + seq_kv, seq_kv)]
            k4, v4 = key, value
        if rel < (7, 3, 0) and sparse_mode == 3:
            need(all(q < k for q, k in zip(sq, sk)), "FIA71/FIA72: sparse 3 needs q length < kv length")
        wl, wr = {0: (-1, -1), 3: (-1, 0), 4: (pre, nxt)}[sparse_mode]
        for q_len, k_len in zip(sq, sk):
            if q_len:
                need(k_len > 0 and bool(visible_mask(q_len, k_len, wl, wr).any(1).all()),
                     "a query row that sees no key: FIA documents no output for it")
        cu_q = torch.tensor([0] + seq_q, dtype=torch.int32)
        cu_k = None if paged else torch.tensor([0] + seq_kv, dtype=torch.int32)
        used = torch.tensor(sk, dtype=torch.int32) if paged else None
        out, lse = ref_flash(query, k4, v4, cu_q, cu_k, used, block_table, scale, wl, wr, 0.0,
                             return_lse=True)
        # lse: (T, N, 1) fp32 (FIA softmax_lse); natural log of the scaled scores assumed (unconfirmed)
        return out, (lse.transpose(0, 1)[:, :, None].contiguous() if lse_flag else torch.zeros(1))

    # -- npu_top_k_top_p --------------------------------------------------------------------------
    def npu_top_k_top_p(self, logits, p=None, k=None):
        self.calls.append("npu_top_k_top_p")
        need(self.rel >= (7, 1, 0), "YAML: npu_top_k_top_p from 7.1.0")
        need(self.family in ("A2", "A3"), "TKP: A2/A3")
        need(logits.dim() == 2 and logits.dtype in (torch.float32,) + HALF, "TKP: 2-D fp32/fp16/bf16 logits")
        b, vocab = logits.shape
        need(p is not None and k is not None, "TKP: p and k are required")
        for name, t in (("logits", logits), ("p", p), ("k", k)):
            self._dev(t, name)
        need(p.dtype == logits.dtype and p.shape == (b,), "TKP: p 1-D, logits' dtype")
        need(bool(((p >= 0) & (p <= 1)).all()), "TKP: p in [0, 1]")
        need(k.dtype == torch.int32 and k.shape == (b,), "TKP: k int32 1-D")
        need(bool(((k >= 1) & (k <= 1024)).all()) and int(k.max()) <= vocab, "TKP: k in [1, 1024], <= vocab")
        # TKP formula: ascending stable sort, keep values >= the k-th largest, then drop the
        # smallest tokens while their cumulative probability is <= 1 - p, never the last one
        s, idx = torch.sort(logits, dim=-1, descending=False, stable=True)
        kth = s.gather(1, (vocab - k.long())[:, None])
        s = s.masked_fill(s < kth, float("-inf"))
        cum = torch.softmax(s, dim=-1).cumsum(dim=-1)
        drop = cum <= (1 - p)[:, None]
        drop[:, -1] = False
        s = s.masked_fill(drop, float("-inf"))
        return torch.empty_like(s).scatter_(1, idx, s)
