"""Probe: top-p alone timings under config variants + single-program pass costs (H200)."""
import torch, warnings, triton, triton.language as tl
import ascend_kernels as ak
from bench.gpu._timing import graph_of, median_ms
warnings.filterwarnings("ignore")

def t_graph(fn):
    g = graph_of(fn)
    return median_ms(g.replay, rep=60) * 1e3

for b in (1, 64):
    torch.manual_seed(0)
    x = torch.randn(b, 128256, device="cuda") * 3
    seeds = torch.arange(b, device="cuda", dtype=torch.int64) * 7 + 1
    for cfg in ({}, {"USE_POOL": False}, {"SNC": 8}, {"SNC": 32}, {"SC": 1024}, {"SC": 256}, {"num_warps": 4},
                {"num_warps": 8}, {"P_MAX": 1024}):
        with ak.force_config("topk_topp_sampling", cfg):
            us = t_graph(lambda: ak.topk_topp_sampling(x, top_p=0.95, seeds=seeds))
        print(f"B{b} top_p 0.95 {cfg}: {us:.1f} us", flush=True)
    us = t_graph(lambda: ak.topk_topp_sampling(x, top_k=50, top_p=0.9, seeds=seeds))
    print(f"B{b} top_k 50 top_p 0.9: {us:.1f} us", flush=True)

@triton.jit
def one_pass(x_ptr, out_ptr, n, CH: tl.constexpr, MODE: tl.constexpr, NC: tl.constexpr):
    acc = tl.zeros([CH], dtype=tl.float32)
    accm = tl.zeros([NC, CH], dtype=tl.float32)
    for s in range(0, n, CH):
        o = s + tl.arange(0, CH)
        x = tl.load(x_ptr + o, mask=o < n, other=0.0)
        if MODE == 0:
            acc += tl.exp(x)
        elif MODE == 1:
            acc += tl.exp(x) / -tl.log(tl.maximum(tl.rand(7, o), 1e-9))
        else:
            c = tl.arange(0, NC).to(tl.float32) * 0.5
            ge = x[None, :] >= c[:, None]
            accm += tl.where(ge, tl.exp(x)[None, :], 0.0)
    tl.store(out_ptr, tl.sum(acc, 0) + tl.sum(tl.sum(accm, 1), 0))

x = torch.randn(128256, device="cuda")
out = torch.empty(1, device="cuda")
for mode, ch, nc, nw in [(0, 1024, 1, 16), (0, 4096, 1, 16), (0, 8192, 1, 16), (1, 1024, 1, 16), (1, 4096, 1, 16),
                         (2, 512, 16, 16), (2, 256, 16, 16), (2, 1024, 16, 16), (2, 512, 4, 16)]:
    us = t_graph(lambda: one_pass[(1,)](x, out, 128256, CH=ch, MODE=mode, NC=nc, num_warps=nw))
    print(f"one program pass mode {mode} CH {ch} NC {nc} warps {nw}: {us:.1f} us", flush=True)
