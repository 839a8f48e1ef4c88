# One device call (CUDA): the quantized-cache GPU tests, the full suite's bench for three ops
# (host µs/call and graph replay), and tuning of three ops with the shipped file exported.
#   bash bench/gpu/run_final.sh   (writes into $OUT)
set -x
export PYTHONPATH=.
timeout 90 python -m pytest -q -p no:cacheprovider tests -k "test_gpu_quantized_cache" > $OUT/gpu_tests_quant.txt 2>&1; tail -3 $OUT/gpu_tests_quant.txt
export ASCEND_KERNELS_CACHE_DIR=$OUT/cache
/usr/bin/time -f "tune wall %e s" timeout 270 python -m ascend_kernels.cli tune --suite full --op reshape_and_cache topk_topp_sampling paged_attention --export --no-progress > $OUT/tune.md 2> $OUT/tune.err; tail -3 $OUT/tune.err
cp ascend_kernels/tuned/cuda__*h200*.json $OUT/ 2>/dev/null; ls $OUT
timeout 200 python -m ascend_kernels.cli bench --suite full --op reshape_and_cache paged_attention topk_topp_sampling --cuda-graph --no-progress --results $OUT/bench_full > $OUT/bench_full.log 2>&1; tail -60 $OUT/bench_full.log
