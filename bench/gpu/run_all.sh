# One device call (CUDA), about 8 minutes: tune every op over the full suite (one tune command
# per op inside its own time limit, the configs compiled ahead of the timing by 14 processes; a cut-short run
# keeps the keys it finished), export the shipped file from the tuning cache, the
# quantized-cache check, eager host time per call, then the full suite per op with the tuned
# (`triton`) and heuristic (`triton-heuristic`) configs and the peers under CUDA graphs (rows
# streamed as measured). Everything lands in $OUT/all.tgz.
#   bash bench/gpu/run_all.sh
set -x
export PYTHONPATH=. PYTHONUNBUFFERED=1 ASCEND_KERNELS_CACHE_DIR=/tmp/akcache
r=$OUT/all; mkdir -p $r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $r/gpu.txt
for op_limit in paged_attention:70 topk_topp_sampling:40 reshape_and_cache:15 flash_attention:90; do
    op=${op_limit%:*}; limit=${op_limit#*:}
    /usr/bin/time -f "$op: tune wall %e s (limit $limit s)" timeout -k 10 $limit \
        python -m ascend_kernels.cli tune --suite full --op $op --no-progress --jobs 14 > $r/tune_$op.md 2>> $r/tune.err
done
python -m ascend_kernels.cli tune --export-only >> $r/tune.err 2>&1
cp ascend_kernels/tuned/cuda__nvidia-h200.json $r/
grep "wall\|exported" $r/tune.err
timeout 25 python bench/gpu/quant_check.py > $r/quant.md 2>&1; tail -9 $r/quant.md
timeout 35 python bench/gpu/host_time.py --json $r/host.json > $r/host.md 2>&1; cat $r/host.md
# flash_attention: the SDPA peers only (compiling flex_attention per case and the fp32 reference
# at 16k tokens would not fit the call)
for op_limit in reshape_and_cache:20 paged_attention:60 topk_topp_sampling:45 flash_attention:60; do
    op=${op_limit%:*}; limit=${op_limit#*:}
    only=""; [ $op = flash_attention ] && only="--providers triton triton-heuristic sdpa-cudnn sdpa-flash"
    /usr/bin/time -f "$op: bench wall %e s (limit $limit s)" timeout -k 10 $limit \
        python -m ascend_kernels.cli bench --suite full --op $op --cuda-graph --no-progress $only \
        --results $r/full_$op --stream $r/full_$op.jsonl > $r/full_$op.log 2>> $r/bench.err
done
grep wall $r/bench.err
tar czf $OUT/all.tgz -C $OUT all
