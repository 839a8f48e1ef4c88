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
