"""Where an eager call's host time goes: cProfile over 2000 back-to-back calls of each small,
host-bound call of host_time.py (public API only), the functions that take the most time
themselves, in µs per call (CUDA).

    PYTHONPATH=. python3 bench/gpu/host_profile.py
"""
import cProfile
import pstats

import torch

from bench.gpu import host_time

CALLS = 2000


def profile(name, fn, top=14):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(CALLS):
        fn()
    torch.cuda.synchronize()
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, function) -> (calls, primitive calls, own s, total s, callers)
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    print(f"\n## {name}\n\n| own µs/call | total µs/call | calls/call | function |\n|---:|---:|---:|---|")
    for (file, line, func), (calls, _, own, total, _) in rows:
        where = f"{file.rsplit('site-packages/', 1)[-1]}:{line}" if line else file
        print(f"| {own / CALLS * 1e6:.2f} | {total / CALLS * 1e6:.2f} | {calls / CALLS:g} | `{func}` {where} |")


def main():
    print(f"# Host time profile: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name, eager, _accept, *ctx in host_time.calls():
        if not ctx:  # the variants are timed by host_time.py
            profile(name, eager)


if __name__ == "__main__":
    main()
