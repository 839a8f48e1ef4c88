import torch, warnings, triton.testing
import ascend_kernels as ak
warnings.filterwarnings("ignore")
def us(fn):
    fn(); torch.cuda.synchronize()
    return triton.testing.do_bench_cudagraph(fn, rep=40, return_mode="median") * 1e3
for b in (1, 64):
    torch.manual_seed(0)
    x = torch.randn(b, 128256, device="cuda") * 3
    seeds = torch.arange(b, device="cuda", dtype=torch.int64) * 7 + 1
    for cfg in ({"GPB": 32, "num_warps": 4}, {"GPB": 64, "num_warps": 4}, {"GPB": 32, "num_warps": 8},
                {"GPB": 32, "num_warps": 4, "SNC": 32}, {"GPB": 64, "num_warps": 8, "SNC": 32},
                {"GPB": 16, "num_warps": 4, "SNC": 32}, {"GPB": 32, "num_warps": 4, "grid_programs_per_core": 1}):
        with ak.force_config("topk_topp_sampling", cfg):
            print(f"B{b} top_p 0.95 {cfg}: {us(lambda: ak.topk_topp_sampling(x, top_p=0.95, seeds=seeds)):.1f}", flush=True)
