# One device call (CUDA), about 9 minutes, after run_tune.sh on the same machine (its tuning
# cache in /tmp/akcache; the exported file is in the tree either way): the full suite per op
# with the tuned (`triton`) and heuristic (`triton-heuristic`) configs and the peers under CUDA
# graphs, and the end-to-end model. Everything lands in $OUT/bench.tgz.
#   bash bench/gpu/run_bench.sh
set -x
export PYTHONPATH=. PYTHONUNBUFFERED=1 ASCEND_KERNELS_CACHE_DIR=/tmp/akcache
r=$OUT/bench; mkdir -p $r
# flash_attention: the SDPA peers only (compiling flex_attention per case and the fp32 reference
# at 16k tokens would not fit the call)
for op_limit in reshape_and_cache:35 paged_attention:90 topk_topp_sampling:60 flash_attention:120; do
    op=${op_limit%:*}; limit=${op_limit#*:}
    only=""; [ $op = flash_attention ] && only="--providers triton triton-heuristic sdpa-cudnn sdpa-flash gather+sdpa"
    /usr/bin/time -f "$op: bench wall %e s (limit $limit s)" timeout $limit \
        python -m ascend_kernels.cli bench --suite full --op $op --cuda-graph --no-progress $only \
        --results $r/full_$op --stream $r/full_$op.jsonl > $r/full_$op.log 2>> $r/bench.err
done
grep wall $r/bench.err
timeout 70 python -m ascend_kernels.cli bench --suite e2e --no-progress --results $r/e2e > $r/e2e.log 2>&1
tail -3 $r/e2e.log
tar czf $OUT/bench.tgz -C $OUT bench
