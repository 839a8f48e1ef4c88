"""reshape_and_cache: write T new tokens' key/value into a paged cache [num_blocks, block_size, Hkv, D].

Shape keys: tokens, kv_heads, head_size, block_size, num_slots (default 4 * tokens, so the
cache is larger than the write and the slots are scattered).
"""
from __future__ import annotations

import torch

from . import Provider, cuda_only, module_absent, ours, randn

OP = "reshape_and_cache"
UNIT = "GB/s"


def label(s: dict) -> str:
    return (f"{s.get('model', '?')} T={s['tokens']} Hkv={s['kv_heads']} D={s['head_size']} "
            f"bs={s['block_size']}")


def tune_shape(s: dict) -> dict:
    return {k: s[k] for k in ("model", "tokens", "kv_heads", "head_size", "block_size", "num_slots") if k in s}


def make_inputs(s: dict, device, dtype) -> dict:
    t, h, d, bs = s["tokens"], s["kv_heads"], s["head_size"], s["block_size"]
    num_blocks = -(-s.get("num_slots", 4 * t) // bs)
    key, value = randn((t, h, d), device, dtype), randn((t, h, d), device, dtype)
    key_cache = randn((num_blocks, bs, h, d), device, dtype)
    value_cache = randn((num_blocks, bs, h, d), device, dtype)
    slots = torch.randperm(num_blocks * bs, device=device)[:t].to(torch.int64)
    return {"key": key, "value": value, "key_cache": key_cache, "value_cache": value_cache,
            "slot_mapping": slots}


def oracle(x: dict):
    kc, vc = x["key_cache"].clone(), x["value_cache"].clone()
    flat_k = kc.view(-1, *kc.shape[2:])
    flat_v = vc.view(-1, *vc.shape[2:])
    flat_k[x["slot_mapping"]] = x["key"]  # a plain scatter: exact, no kernel under test
    flat_v[x["slot_mapping"]] = x["value"]
    return kc, vc


def check(out, expected, x) -> tuple[bool, str]:
    kc, vc = out
    ek, ev = expected
    bad_k = int((kc != ek).sum()) if kc.shape == ek.shape else -1
    bad_v = int((vc != ev).sum()) if vc.shape == ev.shape else -1
    if bad_k == 0 and bad_v == 0:
        return True, "exact"
    return False, f"{bad_k} key / {bad_v} value cache elements differ"


def cost(s: dict, dtype) -> tuple[float, float]:
    es = torch.empty((), dtype=dtype).element_size()
    n = s["tokens"] * s["kv_heads"] * s["head_size"]
    return 0.0, float(4 * n * es + 8 * s["tokens"])  # read k, v; write k, v; read the slots


def _fresh_caches(x):
    return x["key_cache"].clone(), x["value_cache"].clone()


def _build_ours(x, s):
    import ascend_kernels

    kc, vc = _fresh_caches(x)
    key, value, slots = x["key"], x["value"], x["slot_mapping"]

    def fn():
        ascend_kernels.reshape_and_cache(key, value, kc, vc, slots)
        return kc, vc
    return fn


def _build_index_copy(x, s):
    kc, vc = _fresh_caches(x)
    fk, fv = kc.view(-1, *kc.shape[2:]), vc.view(-1, *vc.shape[2:])
    key, value, slots = x["key"], x["value"], x["slot_mapping"]

    def fn():
        fk.index_copy_(0, slots, key)
        fv.index_copy_(0, slots, value)
        return kc, vc
    return fn


def _vllm_absent(device):
    return cuda_only(device) or module_absent("vllm._custom_ops")


def _build_vllm(x, s):
    from vllm import _custom_ops as vops

    kc, vc = _fresh_caches(x)
    key, value, slots = x["key"], x["value"], x["slot_mapping"]
    one = torch.ones((), dtype=torch.float32, device=key.device)

    def fn():
        vops.reshape_and_cache_flash(key, value, kc, vc, slots, "auto", one, one)
        return kc, vc
    return fn


def providers() -> list:
    return ours(OP, _build_ours) + [
        Provider("index_copy_", "peer", _build_index_copy, None, note="two index_copy_ on the flat caches"),
        Provider("vllm", "peer", _build_vllm, _vllm_absent, note="vLLM reshape_and_cache_flash"),
    ]
