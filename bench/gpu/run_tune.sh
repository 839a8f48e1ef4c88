# One device call (CUDA), about 9 minutes: tune every op over the full suite (one tune command
# per op, each inside its own time limit, its configs compiled by 15 processes first), export
# the shipped file from the tuning cache, then the acceptance suite and the quantized-cache
# check on the tuned configs, eager host time per call (host_time.py) and where it goes
# (host_profile.py). Everything lands in $OUT/tune.tgz.
#   bash bench/gpu/run_tune.sh
set -x
export PYTHONPATH=. PYTHONUNBUFFERED=1 ASCEND_KERNELS_CACHE_DIR=/tmp/akcache
r=$OUT/tune; mkdir -p $r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $r/gpu.txt
for op_limit in paged_attention:110 topk_topp_sampling:60 reshape_and_cache:25 flash_attention:150; do
    op=${op_limit%:*}; limit=${op_limit#*:}
    /usr/bin/time -f "$op: tune wall %e s (limit $limit s)" timeout $limit \
        python -m ascend_kernels.cli tune --suite full --op $op --no-progress --jobs 15 > $r/tune_$op.md 2>> $r/tune.err
done
python -m ascend_kernels.cli tune --export-only >> $r/tune.err 2>&1
cp ascend_kernels/tuned/cuda__nvidia-h200.json $r/
grep "wall\|exported" $r/tune.err
timeout 60 python -m ascend_kernels.cli bench --suite bench/gpu/acceptance.yaml --cuda-graph --no-progress \
    --results $r/acceptance --stream $r/acceptance.jsonl > $r/acceptance.log 2>&1
tail -4 $r/acceptance.log
timeout 35 python bench/gpu/quant_check.py > $r/quant.md 2>&1; tail -9 $r/quant.md
timeout 45 python bench/gpu/host_time.py --json $r/host.json > $r/host.md 2>&1; cat $r/host.md
timeout 40 python bench/gpu/host_profile.py > $r/profile.txt 2>&1
tar czf $OUT/tune.tgz -C $OUT tune
