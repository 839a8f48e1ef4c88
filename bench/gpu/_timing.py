"""Timing helpers of the bench/gpu scripts (CUDA)."""
import torch
import triton.testing


def median_ms(fn, rep: float = 200) -> float:
    """triton.testing.do_bench median in ms (warmup 25 ms), after one call that compiles."""
    fn()
    torch.cuda.synchronize()
    return float(triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median"))


def graph_of(fn) -> torch.cuda.CUDAGraph:
    """A CUDA graph of one call of fn, captured after warm-up calls on a side stream."""
    fn()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


def decode_batch(batch=64, context=4096, heads=32, kv_heads=8, head=128, block=16, seed=0):
    """A paged decode batch over a random page order (seeded): (query bf16, block table,
    seq_lens, number of pages); the defaults are the quantized-decode acceptance shape."""
    torch.manual_seed(seed)
    pages = batch * context // block
    q = torch.randn(batch, heads, head, device="cuda", dtype=torch.bfloat16)
    table = torch.randperm(pages, device="cuda").to(torch.int32).reshape(batch, context // block)
    lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
    return q, table, lens, pages
