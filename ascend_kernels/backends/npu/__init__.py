"""Huawei Ascend NPUs (910B, A2/A3) through triton-ascend; ATB/aclnn through torch_npu
(`fallback_atb`) takes what the kernels cannot.

Grids are persistent over the physical cores: `num_aicore` (cube) for kernels with tl.dot,
`num_vectorcore` for the others, as triton-ascend's driver reports them. A config's lowercase
keys other than `grid_*` are triton-ascend compile options (multibuffer, ...); it has no
num_warps / num_stages.
"""
from __future__ import annotations

import torch

FALLBACK = "fallback_atb"
# 192 KB unified buffer per AI core; the default multibuffer halves what one stage may use.
UB_BYTES = 192 * 1024


def properties(index: int) -> dict:
    import triton

    props = triton.runtime.driver.active.utils.get_device_properties(index)
    name = torch.npu.get_device_name(index)
    return {"name": name, "arch": name, "num_aicore": int(props["num_aicore"]),
            "num_vectorcore": int(props["num_vectorcore"]), "ub_bytes": UB_BYTES, "tma": False,
            "smem_bytes": None}


def launch_options(config: dict) -> dict:
    return {k: v for k, v in config.items()
            if k[:1].islower() and not k.startswith("grid_") and k not in ("num_warps", "num_stages")}
