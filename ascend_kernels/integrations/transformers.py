"""Hugging Face transformers (5.x) models on the four ops: a paged KV cache, an attention
function for transformers' `AttentionInterface`, and a generation loop that samples with
`topk_topp_sampling`.

    import ascend_kernels.integrations.transformers as ak_hf
    model.set_attn_implementation(ak_hf.register())        # "ascend_kernels"
    tokens = ak_hf.generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=32)

How a forward travels. The model runs with `use_cache=False` and no attention mask; the batch
is packed (input_ids [1, total_tokens] for a prompt or chunk, [num_seqs, 1] for a decode step)
with per-sequence `position_ids`, so no padding token exists. The metadata of the step (a
`Metadata`: the cache, slot mapping, block table, key counts, cu_seqlens_q) rides in the forward
kwargs under `ak_metadata`; transformers hands unknown kwargs down to every attention call. The
attention function writes the new K/V with `reshape_and_cache`, then attends over the paged
cache with `flash_attention` (prompts and chunks) or `paged_attention` (one token per sequence),
with the layer's scaling, sliding window and softcap. Masks are never built: an attention name
that transformers' mask interface does not know makes `create_causal_mask` return None.

Host syncs: none per decode step. Block tables are filled when a sequence reserves room (host
ints, one copy to the device per reservation); decode slots are computed on the device from the
block table and the device `seq_lens`, so a decode step is a fixed sequence of kernels over
static tensors and captures in a CUDA graph (`PagedRunner(..., cuda_graph=True)`).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import torch

import ascend_kernels as ak

ATTN_NAME = "ascend_kernels"
META_KWARG = "ak_metadata"
_SEED_STEP = 0x9E3779B9  # per-step seed = row seed XOR (step * this): distinct draws per step

Param = Union[None, int, float, Sequence, torch.Tensor]


class BlockAllocator:
    """Free list of the cache's page ids (host side; allocation happens only on reservation)."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise RuntimeError(f"KV cache out of blocks: {n} wanted, {len(self._free)} free of "
                               f"{self.num_blocks}")
        return [self._free.pop() for _ in range(n)]

    def free(self, blocks: Sequence[int]) -> None:
        self._free.extend(reversed(blocks))


class PagedKVCache:
    """Per-layer key/value caches in the ops' layout [num_blocks, block_size, num_kv_heads,
    head_size], a block allocator, and per-sequence block tables: int32 [max_seqs,
    max_blocks_per_seq] on the device (entries past a sequence's blocks are 0 and never read)
    with its host mirror. Sequence `i` is row `i` of the table."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_size: int, *, num_blocks: int,
                 block_size: int, max_seqs: int, max_blocks_per_seq: int,
                 dtype: torch.dtype, device: Union[str, torch.device]):
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks)
        shape = (num_blocks, block_size, num_kv_heads, head_size)
        self.key_caches = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.value_caches = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.block_table = torch.zeros(max_seqs, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.blocks: list[list[int]] = [[] for _ in range(max_seqs)]

    @classmethod
    def for_model(cls, model, *, max_seqs: int, max_seq_len: int, block_size: int = 16,
                  num_blocks: Optional[int] = None) -> "PagedKVCache":
        """A cache sized for `model` (its text config) and `max_seqs` sequences of up to
        `max_seq_len` tokens (num_blocks defaults to exactly that much)."""
        cfg = model.config.get_text_config()
        head_size = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        per_seq = -(-max_seq_len // block_size)
        return cls(cfg.num_hidden_layers, cfg.num_key_value_heads, head_size,
                   num_blocks=num_blocks or max_seqs * per_seq, block_size=block_size,
                   max_seqs=max_seqs, max_blocks_per_seq=per_seq, dtype=model.dtype,
                   device=model.device)

    def layer(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key_caches[idx], self.value_caches[idx]

    def reserve(self, seq: int, num_tokens: int) -> None:
        """Give sequence `seq` pages for `num_tokens` tokens in all (one table-row copy)."""
        have = self.blocks[seq]
        need = -(-num_tokens // self.block_size)
        if need > self.block_table.shape[1]:
            raise ValueError(f"{num_tokens} tokens need {need} blocks, the table holds "
                             f"{self.block_table.shape[1]} per sequence")
        if need > len(have):
            have.extend(self.allocator.allocate(need - len(have)))
            row = torch.tensor(have, dtype=torch.int32)
            self.block_table[seq, :len(have)].copy_(row, non_blocking=True)

    def free(self, seq: int) -> None:
        self.allocator.free(self.blocks[seq])
        self.blocks[seq] = []

    def slots(self, block_table: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Cache slots (int64, on the device) of tokens at positions `pos` of rows `rows` of
        `block_table`: block_table[row, pos // block_size] * block_size + pos % block_size."""
        pages = block_table[rows, pos // self.block_size].long()
        return pages * self.block_size + pos % self.block_size


@dataclasses.dataclass
class Metadata:
    """What the attention function needs for one forward, shared by all layers.

    slot_mapping: int64 [num_tokens], the cache slot of each new token (-1: skip).
    block_table:  int32 [num_seqs, max_blocks].
    seq_lens:     int32 [num_seqs], keys per sequence after this forward (new tokens included).
    cu_seqlens_q: int32 [num_seqs + 1] for a prompt/chunk forward (flash_attention), None for a
                  decode forward of one token per sequence (paged_attention).
    max_seqlen_q: the longest query of a prompt/chunk forward (a host int).
    """
    cache: PagedKVCache
    slot_mapping: torch.Tensor
    block_table: torch.Tensor
    seq_lens: torch.Tensor
    cu_seqlens_q: Optional[torch.Tensor] = None
    max_seqlen_q: int = 1


def attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask=None, scaling: Optional[float] = None, dropout: float = 0.0,
                      sliding_window: Optional[int] = None, softcap: Optional[float] = None,
                      **kwargs):
    """transformers' attention-function signature: query [B, H, S, D], key/value [B, Hkv, S, D]
    (the new tokens only; the model runs without a transformers cache). The B * S tokens are the
    ones `kwargs["ak_metadata"]` describes, in order. Returns ([B, S, H, D], None)."""
    meta: Optional[Metadata] = kwargs.get(META_KWARG)
    if meta is None:
        raise ValueError(f"attention {ATTN_NAME!r} needs the step's metadata in the forward kwargs "
                         f"({META_KWARG}=...): run the model through ascend_kernels.integrations."
                         f"transformers (generate / PagedRunner), not model.generate")
    b, h, s, d = query.shape
    if meta.slot_mapping.shape[0] != b * s:
        raise ValueError(f"the forward carries {b * s} tokens, its {META_KWARG} describes "
                         f"{meta.slot_mapping.shape[0]}")
    q = query.transpose(1, 2).reshape(b * s, h, d)
    k = key.transpose(1, 2).reshape(b * s, -1, d)
    v = value.transpose(1, 2).reshape(b * s, -1, d)
    key_cache, value_cache = meta.cache.layer(module.layer_idx)
    ak.reshape_and_cache(k, v, key_cache, value_cache, meta.slot_mapping)
    window = sliding_window if sliding_window is not None else getattr(module, "sliding_window", None)
    window = int(window) if window else None
    if softcap is None:
        softcap = getattr(module, "attn_logit_softcapping", None)
    softcap = float(softcap or 0.0)
    if scaling is None:
        scaling = getattr(module, "scaling", None)
    if meta.cu_seqlens_q is None:
        out = ak.paged_attention(q, key_cache, value_cache, meta.block_table, meta.seq_lens,
                                 scale=scaling, sliding_window=window, softcap=softcap)
    else:
        out = ak.flash_attention(q, key_cache, value_cache, cu_seqlens_q=meta.cu_seqlens_q,
                                 max_seqlen_q=meta.max_seqlen_q, seqused_k=meta.seq_lens,
                                 block_table=meta.block_table, softmax_scale=scaling,
                                 causal=getattr(module, "is_causal", True),
                                 sliding_window=window, softcap=softcap)
    return out.view(b, s, h, d), None


def register(name: str = ATTN_NAME) -> str:
    """Register `attention_forward` with transformers' AttentionInterface; returns the name for
    `model.set_attn_implementation(name)` / `from_pretrained(..., attn_implementation=name)`."""
    from transformers import AttentionInterface

    AttentionInterface.register(name, attention_forward)
    return name


def _row_param(value: Param, rows: int, dtype: torch.dtype, device):
    """None stays None, a scalar stays a host scalar (the op's scalar path), a sequence becomes
    a [rows] tensor of `dtype` on `device`."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if dtype.is_floating_point else int(value)
    t = torch.as_tensor(value, dtype=dtype).to(device)
    if t.shape != (rows,):
        raise ValueError(f"a per-row sampling parameter must have {rows} entries, got {tuple(t.shape)}")
    return t


def capture_cuda_graph(fn, device) -> "torch.cuda.CUDAGraph":
    """Run `fn` once on a side stream (the warm-up torch.cuda.graphs asks for: compiles kernels,
    allocates), then capture it; returns the graph. The warm-up was a real run; each replay is
    another. `fn` must read and write only tensors that outlive the graph."""
    device = torch.device(device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


class PagedRunner:
    """One batch of sequences through a model on the ops: `prefill()` runs the prompts (packed,
    optionally in chunks) and samples each sequence's first new token; each `decode()` feeds the
    last tokens and samples the next. Sampling is `topk_topp_sampling` with per-row parameters
    (temperature 0 = greedy) and per-row seeds (step t uses seed XOR t * 0x9E3779B9).

    Decode works on static tensors only (tokens, seq_lens, block table, step counter), so with
    cuda_graph=True the first decode step runs eagerly (warm-up) and is then captured; later
    steps replay the graph. Sequences that hit EOS keep decoding (no host sync to find out);
    `generate` cuts them afterwards.
    """

    def __init__(self, model, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                 temperature: Param = 0.0, top_k: Param = None, top_p: Param = None,
                 seeds: Param = None, block_size: int = 16, num_blocks: Optional[int] = None,
                 cuda_graph: bool = False):
        self.model = model
        self.prompts = [list(map(int, p)) for p in prompts]
        if not self.prompts or min(map(len, self.prompts)) < 1 or max_new_tokens < 1:
            raise ValueError("need at least one non-empty prompt and max_new_tokens >= 1")
        n = len(self.prompts)
        dev = model.device
        self.device = dev
        max_len = max(map(len, self.prompts)) + max_new_tokens - 1  # the last token is never fed
        self.cache = PagedKVCache.for_model(model, max_seqs=n, max_seq_len=max_len,
                                            block_size=block_size, num_blocks=num_blocks)
        for i, p in enumerate(self.prompts):
            self.cache.reserve(i, len(p) + max_new_tokens - 1)
        self.block_table = self.cache.block_table[:n]
        self.rows = torch.arange(n, device=dev)
        self.temperature = _row_param(temperature, n, torch.float32, dev)
        self.top_k = _row_param(top_k, n, torch.int32, dev)
        self.top_p = _row_param(top_p, n, torch.float32, dev)
        if seeds is None:
            seeds = torch.randint(0, 2 ** 62, (n,))
        elif isinstance(seeds, int):
            seeds = [seeds + i for i in range(n)]
        self.seeds = _row_param(seeds, n, torch.int64, dev)
        self.step = torch.zeros((), dtype=torch.int64, device=dev)
        self.tokens = torch.zeros(n, dtype=torch.int64, device=dev)  # the last sampled token
        self.seq_lens = torch.zeros(n, dtype=torch.int32, device=dev)  # keys in the cache
        self.cuda_graph = bool(cuda_graph) and dev.type == "cuda"
        self._graph = None

    def _sample(self, logits: torch.Tensor) -> None:
        self.logits = logits  # [n, vocab]: the logits the last tokens were sampled from
        seeds = torch.bitwise_xor(self.seeds, self.step * _SEED_STEP)
        self.step.add_(1)
        self.tokens.copy_(ak.topk_topp_sampling(logits, top_k=self.top_k, top_p=self.top_p,
                                                temperature=self.temperature, seeds=seeds))

    def _forward(self, input_ids, position_ids, meta: Metadata, logits_to_keep=0) -> torch.Tensor:
        out = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                         logits_to_keep=logits_to_keep, **{META_KWARG: meta})
        return out.logits

    @torch.inference_mode()
    def prefill(self, chunk_size: Optional[int] = None) -> torch.Tensor:
        """Run the prompts, at most `chunk_size` tokens of each sequence per forward (default:
        whole prompts in one forward); returns the first sampled token of each sequence [n]."""
        n = len(self.prompts)

        def dev(values, dtype=torch.int64):  # host ints -> device tensor (a copy, no sync)
            return torch.tensor(values, dtype=dtype).to(self.device)

        done = [0] * n
        last_logits = None
        while True:
            take = [min(len(p) - d, chunk_size or len(p)) for p, d in zip(self.prompts, done)]
            if not any(take):
                break
            ids, pos, rows, cu = [], [], [], [0]
            for i, (p, d, t) in enumerate(zip(self.prompts, done, take)):
                ids += p[d:d + t]
                pos += range(d, d + t)
                rows += [i] * t
                cu.append(cu[-1] + t)
            ends = [i for i in range(n) if take[i] and done[i] + take[i] == len(self.prompts[i])]
            done = [d + t for d, t in zip(done, take)]
            pos_t = dev(pos)
            slots = self.cache.slots(self.block_table, dev(rows), pos_t)
            meta = Metadata(self.cache, slot_mapping=slots, block_table=self.block_table,
                            seq_lens=dev(done, torch.int32),
                            cu_seqlens_q=dev(cu, torch.int32), max_seqlen_q=max(take))
            logits = self._forward(dev(ids)[None], pos_t[None], meta, dev([cu[i + 1] - 1 for i in ends]))
            if last_logits is None:
                last_logits = logits.new_empty(n, logits.shape[-1])
            last_logits[dev(ends)] = logits[0]
        self.seq_lens.copy_(torch.tensor(done, dtype=torch.int32))
        self._sample(last_logits)
        return self.tokens

    def _decode_step(self) -> None:
        pos = self.seq_lens.long()
        meta = Metadata(self.cache, slot_mapping=self.cache.slots(self.block_table, self.rows, pos),
                        block_table=self.block_table, seq_lens=self.seq_lens.add_(1))
        logits = self._forward(self.tokens[:, None], pos[:, None], meta)
        self._sample(logits[:, -1])

    @torch.inference_mode()
    def decode(self) -> torch.Tensor:
        """One decode step (eager, or a CUDA-graph replay); returns the sampled tokens [n] (a
        static tensor, overwritten by the next step)."""
        if self._graph is not None:
            self._graph.replay()
        elif self.cuda_graph:
            self._graph = capture_cuda_graph(self._decode_step, self.device)
        else:
            self._decode_step()
        return self.tokens


def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             temperature: Param = 0.0, top_k: Param = None, top_p: Param = None,
             seeds: Param = None, eos_token_id: Union[None, int, Sequence[int]] = None,
             block_size: int = 16, prefill_chunk: Optional[int] = None,
             cuda_graph: bool = False) -> list[list[int]]:
    """Generate up to `max_new_tokens` tokens for each prompt (lists of token ids, any lengths)
    through the ops; returns the new tokens of each prompt, cut after its first EOS.

    temperature / top_k / top_p: a scalar for every row or one value per row (temperature 0 =
    greedy, top_k 0 / top_p 1 = off). seeds: one int64 per row (an int s gives s, s+1, ...;
    None draws them from torch's default generator). The model's attention implementation must
    be the registered one (`model.set_attn_implementation(register())`).
    """
    runner = PagedRunner(model, prompts, max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, seeds=seeds, block_size=block_size, cuda_graph=cuda_graph)
    out = torch.empty(len(runner.prompts), max_new_tokens, dtype=torch.int64, device=runner.device)
    out[:, 0] = runner.prefill(prefill_chunk)
    for i in range(1, max_new_tokens):
        out[:, i] = runner.decode()
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    result = []
    for row in out.tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        result.append(row[:cut])
    return result
