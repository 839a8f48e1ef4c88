"""CPU tensors: PyTorch by default; the Triton interpreter (either triton package) when
ASCEND_KERNELS_INTERPRET=1 is set before import (see launcher/device.py).

Interpreter rules the kernels follow: it runs programs one after another, so a few programs
keep the persistent loops exercised without paying per-program overhead many times; it takes no
launch options; and `tl.dot` on bf16 operands is wrong there (numpy has no bf16), so attention
kernels cast dot operands to fp32 (their DOT_FP32 constexpr).
"""
from __future__ import annotations

FALLBACK = "reference"
DOTS_IN_FP32 = True
# a task's last program to arrive (atomic counters) finishes it in the same launch: paged
# decode's split-KV merge (MERGE_LAST), sampling after the group statistics (SAMPLE_LAST)
LAST_ARRIVAL = True


def properties(index: int) -> dict:
    return {"name": "cpu (triton interpreter)", "arch": "cpu", "num_aicore": 4, "num_vectorcore": 4,
            "ub_bytes": None, "tma": False, "smem_bytes": None}


def launch_options(config: dict) -> dict:
    return {}
