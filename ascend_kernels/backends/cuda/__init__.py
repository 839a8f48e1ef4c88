"""NVIDIA GPUs through upstream Triton; PyTorch (SDPA etc.) takes what the kernels cannot."""
from __future__ import annotations

import importlib.util

import torch

FALLBACK = "reference"
OPTIONS = ("num_warps", "num_stages", "maxnreg")
# paged decode over int8/fp8 caches: dots in fp16, codes converted by inline PTX
# (kernels/_quant.py); int8 1.46x -> 0.74x the bf16 decode time on the H200. Prefill (wgmma)
# is slower that way (int8 chunked prefill, H200: 1.28 ms in bf16 dots, 1.41-1.96 in fp16) and
# keeps its dots in the query's dtype.
QUANT_DOTS_FP16 = True
# a task's last program to arrive (atomic counters) finishes it in the same launch: paged
# decode's split-KV merge (MERGE_LAST), sampling after the group statistics (SAMPLE_LAST)
LAST_ARRIVAL = True


def properties(index: int) -> dict:
    p = torch.cuda.get_device_properties(index)
    tma = p.major >= 9 and importlib.util.find_spec("triton.tools.tensor_descriptor") is not None
    return {"name": p.name, "arch": f"sm_{p.major}{p.minor}", "num_aicore": p.multi_processor_count,
            "num_vectorcore": p.multi_processor_count, "ub_bytes": None, "tma": tma,
            "smem_bytes": getattr(p, "shared_memory_per_block_optin", None)}


def launch_options(config: dict) -> dict:
    return {k: v for k, v in config.items() if k in OPTIONS}
