"""Every op is one opaque custom-op node: torch.compile(fullgraph=True) traces each public call
without a graph break and gives the eager result. On the CPU with backend aot_eager (dynamo +
fake tensors + functionalization, the real kernels through the interpreter); on a GPU with
inductor."""
import pytest
import torch

import ascend_kernels as ak


def _cases(device):
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, dtype=torch.float16):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    def reshape_and_cache():
        key, value = rnd(7, 2, 32), rnd(7, 2, 32)
        kc, vc = rnd(3, 16, 2, 32), rnd(3, 16, 2, 32)
        slots = torch.tensor([5, -1, 17, 40, 2, 33, 9], device=device)

        def f(key, value, kc, vc, slots):
            ak.reshape_and_cache(key, value, kc, vc, slots)
            return kc, vc
        return f, (key, value, kc, vc, slots)

    def flash_attention():
        q, k, v = rnd(30, 4, 32), rnd(30, 2, 32), rnd(30, 2, 32)
        cu = torch.tensor([0, 11, 30], dtype=torch.int32, device=device)

        def f(q, k, v, cu):
            return ak.flash_attention(q, k, v, cu_seqlens_q=cu, max_seqlen_q=19, causal=True)
        return f, (q, k, v, cu)

    def paged_attention():
        q, kc, vc = rnd(3, 4, 32), rnd(6, 16, 2, 32), rnd(6, 16, 2, 32)
        bt = torch.tensor([[0, 1], [2, 3], [4, 5]], dtype=torch.int32, device=device)
        lens = torch.tensor([20, 1, 32], dtype=torch.int32, device=device)

        def f(q, kc, vc, bt, lens):
            return ak.paged_attention(q, kc, vc, bt, lens)
        return f, (q, kc, vc, bt, lens)

    def topk_topp_sampling():
        logits = rnd(3, 100, dtype=torch.float32) * 3
        seeds = torch.tensor([1, 2, 3], device=device)

        def f(logits, seeds):
            return ak.topk_topp_sampling(logits, top_k=10, top_p=0.9, temperature=0.7, seeds=seeds)
        return f, (logits, seeds)

    return dict(reshape_and_cache=reshape_and_cache, flash_attention=flash_attention,
                paged_attention=paged_attention, topk_topp_sampling=topk_topp_sampling)


def _assert_same(got, want):
    if isinstance(want, torch.Tensor):
        assert torch.equal(got, want)
    else:
        for a, b in zip(got, want):
            _assert_same(a, b)


def _run_case(name, device, backend):
    torch._dynamo.reset()
    f, args = _cases(device)[name]()
    eager_args = [a.clone() for a in args]
    want = f(*eager_args)
    got = torch.compile(f, fullgraph=True, backend=backend)(*args)
    _assert_same(got, want)


@pytest.mark.parametrize("name", ["reshape_and_cache", "flash_attention", "paged_attention",
                                  "topk_topp_sampling"])
def test_compile_fullgraph_cpu(name):
    _run_case(name, "cpu", "aot_eager")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["reshape_and_cache", "flash_attention", "paged_attention",
                                  "topk_topp_sampling"])
def test_compile_fullgraph_gpu(name):
    _run_case(name, "cuda", "inductor")
