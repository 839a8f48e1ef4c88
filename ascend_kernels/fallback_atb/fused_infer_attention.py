"""torch_npu.npu_fused_infer_attention_score (FIA): its documented limits, shared by the
flash_attention (input_layout "TND") and paged_attention (decode, input_layout "BSH") fallbacks.

Sources (Ascend/op-plugin):
- D26 = docs/zh/custom_APIs/torch_npu/torch_npu-npu_fused_infer_attention_score.md, branch 26.1.0
  (26.0.0 and 7.3.0 read the same for every rule used here; 7.3.0 keeps it under
  docs/context/torch_npu-npu_fused_infer_attention_score.md).
- D71, D72 = docs/context/torch_npu-npu_fused_infer_attention_score.md, branches 7.1.0, 7.2.0.
- op_plugin/config/op_plugin_functions.yaml: the signature (keyword arguments, SymInt[] lengths).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import _npu

INT_MAX = 2147483647
MASK_SIZE = 2048
MAX_BATCH_TND = 4096
MAX_TOKENS_TND_BEFORE_73 = 1_000_000  # D71/D72: "T小于等于1M" (the smaller reading of 1M)
MAX_BATCH_DECODE, MAX_KV_LEN_DECODE = 65536, 262144  # D26 Q_S=1: B <= 65536, S <= 262144
_masks: dict = {}


def npu_fused_infer_attention_score_reason(layout: str, query, key, *, num_kv_heads: int,
                                           block_size: int = 0, sparse_mode: int = 0,
                                           seq_q: Optional[Sequence[int]] = None,
                                           seq_kv: Optional[Sequence[int]] = None,
                                           kv_int8: bool = False) -> Optional[str]:
    """None when FIA takes the call, else the limit it breaks (one line).

    Arguments in this library's layouts, before translation: query [T, N, D] (TND) or
    [B, N, D] (BSH decode, one token per sequence); key [T_k, N_kv, D] (varlen) or a paged cache
    [num_blocks, block_size, N_kv, D] with block_size > 0. seq_q / seq_kv: per-sequence lengths
    on the host, when known (value rules are checked only then). kv_int8: an int8 paged cache
    read through FIA's KV-separated antiquant scales (BSH decode only). FIA rejects non-contiguous
    inputs (D26, query/key/value); the wrappers copy q and varlen k/v (T rows), so only a paged
    cache, which would be copied whole, must already be contiguous.
    """
    family = _npu.soc_family()
    rel = _npu.release()
    num_heads, head_size = query.shape[-2], query.shape[-1]
    dtype = query.dtype
    if not _npu.has_operator("npu_fused_infer_attention_score"):
        return "this torch_npu has no npu_fused_infer_attention_score (op_plugin_functions.yaml: from 6.0.rc3)"
    if family not in ("A2", "A3"):
        return f"SoC {family}: FIA is documented here for A2/A3 only (D26 product table)"
    if dtype not in (torch.float16, torch.bfloat16) or key.dtype != (torch.int8 if kv_int8 else dtype):
        return f"dtypes {dtype}/{key.dtype}: FIA takes fp16/bf16 query with k/v of the same dtype (D26 query/key)"
    if key.numel() > INT_MAX:
        return (f"key/value of {key.numel()} elements: FIA takes at most {INT_MAX} (D26 constraints: the "
                "product of key's and value's dimensions fits int32)")
    if kv_int8 and (layout != "BSH" or block_size <= 0):
        return "int8 K/V: FIA's page attention takes antiquant at one query token only (D26 Q_S>1 page attention)"
    if kv_int8 and rel < (7, 2, 0):
        return (f"torch_npu release {_npu.release_name(rel)}: FIA's per-tensor / per-head antiquant scales "
                "are tabled from 7.2.0 on (D72 kv伪量化参数分离)")
    if layout == "BSH" and query.shape[0] > MAX_BATCH_DECODE:
        return f"batch {query.shape[0]}: FIA at one query token takes B <= {MAX_BATCH_DECODE} (D26 Q_S=1)"
    if num_heads % num_kv_heads or num_heads // num_kv_heads > 64:
        return f"{num_heads} heads over {num_kv_heads} kv heads: FIA needs a divisor, ratio <= 64 (D26 num_key_value_heads)"
    if num_heads > 256:
        return f"{num_heads} heads: FIA takes N <= 256 (D26 constraints)"
    if head_size > 512 or head_size % 16:
        return f"head_size {head_size}: FIA takes D <= 512, 16-aligned for fp16/bf16 (D26 constraints)"
    paged = block_size > 0
    if paged:
        if not key.is_contiguous():
            return "strided paged cache: FIA needs contiguous key/value (a copy would be the whole cache)"
        align = 32 if kv_int8 else 16
        if block_size % align or block_size > 512:
            return (f"block_size {block_size}: FIA page attention needs a multiple of {align} for "
                    f"{'int8' if kv_int8 else 'fp16/bf16'} K/V, at most 512 (D26 Q_S=1 page attention)")
        if num_kv_heads * head_size > 65535:
            return f"N_kv*D {num_kv_heads * head_size}: FIA's (blocknum, blocksize, H) cache needs H <= 65535 (D26 page attention)"
    if layout == "TND":
        reason = _tnd_reason(rel, dtype, num_heads, num_kv_heads, head_size, paged, block_size,
                             sparse_mode, seq_q, seq_kv)
        if reason:
            return f"torch_npu release {_npu.release_name(rel)}: {reason}"
    return None


def _tnd_reason(rel, dtype, num_heads, num_kv_heads, head_size, paged, block_size, sparse_mode,
                seq_q, seq_kv) -> Optional[str]:
    """The TND-specific limits ("TND、TND_NTD、NTD_TND场景下query、key、value输入的综合限制")."""
    if rel < (7, 1, 0):
        return "FIA's TND layout is documented from 7.1.0 on"
    sizes = (192,) if rel < (7, 2, 0) else (128, 192)  # D71: Q_D=K_D=192; D72/D26: 128 or 192
    if head_size not in sizes:
        return f"TND takes head_size {' or '.join(map(str, sizes))}, not {head_size} (TND constraints)"
    if rel < (7, 3, 0) and dtype != torch.bfloat16:
        return "TND takes bf16 only before 7.3.0 (D71/D72 TND constraints)"
    if rel < (7, 2, 0) and (num_kv_heads != num_heads or num_heads not in (2, 4, 8, 16, 32, 64, 128)):
        return "TND in 7.1.0 needs Q_N = KV_N in {2, 4, ..., 128}: no GQA (D71 TND constraints)"
    if paged and rel < (7, 3, 0):
        return "TND has no page attention before 7.3.0 (D71/D72 TND constraints)"
    # D26's TND section allows block sizes 16-aligned up to 1024, its Q_S>1 page-attention section
    # 128..512 in steps of 128; until a host settles it, TND pages take the narrower rule.
    if paged and (block_size % 128 or block_size > 512):
        return f"block_size {block_size}: TND page attention taken only for 128, 256, 384, 512 (D26 Q_S>1 page attention)"
    if sparse_mode == 4 and rel < (7, 3, 0):
        # D71 allows sparse 0/3 only; D72 allows band in one line and forbids it in another
        return "TND band mask (sparse_mode 4) is documented from 7.3.0 on"
    if seq_q is not None:
        if rel < (7, 3, 0) and sum(seq_q) > MAX_TOKENS_TND_BEFORE_73:
            return f"{sum(seq_q)} query tokens: TND takes T <= 1M before 7.3.0 (D71/D72 TND constraints)"
        if len(seq_q) > MAX_BATCH_TND:
            return f"{len(seq_q)} sequences: TND takes at most {MAX_BATCH_TND} (TND constraints)"
        if sparse_mode == 3 and rel < (7, 3, 0) and any(q >= k for q, k in zip(seq_q, seq_kv)):
            return "TND causal before 7.3.0 needs every query length < its key length (D71/D72)"
    return None


def pages_only(block_table: torch.Tensor, seq_lens: torch.Tensor, block_size: int) -> torch.Tensor:
    """int32 block table with the entries past each sequence's pages set to block 0 (on the
    device): neither ATB PagedAttention nor FIA checks ids ("block_tables中元素的值须在[0, num_blocks)
    之间"; FIA: block ids are not validated), and in this library's contract they may be anything."""
    pages = (seq_lens.to(torch.int32) + block_size - 1) // block_size
    col = torch.arange(block_table.shape[1], device=block_table.device, dtype=torch.int32)
    return torch.where(col[None, :] < pages[:, None], block_table, torch.zeros_like(block_table)).to(torch.int32)


def too_few_blocks(seq_kv: Sequence[int], block_size: int, num_blocks: int) -> bool:
    """Whether the sequences' block counts add up to more than the cache holds, which FIA's page
    attention forbids ("blocknum不能小于...每个batch的block数量之和", D26; a prefix's shared blocks
    count once per sequence)."""
    return sum(-(-int(n) // block_size) for n in seq_kv) > num_blocks


def band_args(window_left: int, window_right: int) -> tuple[int, int, int]:
    """(sparse_mode, pre_tokens, next_tokens) of the bottom-right aligned band: 0 no mask,
    3 rightDownCausal, 4 band (pre_tokens keys before the diagonal, next_tokens after it)."""
    if window_left < 0 and window_right < 0:
        return 0, INT_MAX, INT_MAX
    if window_left < 0 and window_right == 0:
        return 3, INT_MAX, 0
    return 4, (window_left if window_left >= 0 else INT_MAX), (window_right if window_right >= 0 else INT_MAX)


def compressed_mask(device) -> torch.Tensor:
    """The 2048 x 2048 mask sparse_mode 3/4 require (D26 sparse_mode), 1 = masked, as
    vllm-ascend's splitfuse mask (vllm_ascend/attention/attention_mask.py)."""
    key = str(device)
    if key not in _masks:
        _masks[key] = torch.triu(torch.ones(MASK_SIZE, MASK_SIZE, dtype=torch.int8, device=device), 1)
    return _masks[key]
