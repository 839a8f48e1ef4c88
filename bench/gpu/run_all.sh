# The H200 results in four device calls (CUDA), each under 10 minutes:
#   TUNE_OPS="paged_attention:290" bash bench/gpu/run_all.sh tune
#   TUNE_OPS="topk_topp_sampling:130 flash_attention:300" bash bench/gpu/run_all.sh tune
#                                     # tune paged_attention, topk_topp_sampling and flash_attention
#                                     # over the full suite (one tune command per op inside its own
#                                     # time limit, configs compiled ahead by 14 processes, timed as
#                                     # CUDA graph replays; a cut-short run keeps the keys it
#                                     # finished) and export the shipped file -> $OUT/tune.tgz
#   bash bench/gpu/run_all.sh bench   # with that file in the tree: the quantized-cache check, eager
#                                     # host time per call, the full suite per op with the tuned
#                                     # (`triton`) and heuristic (`triton-heuristic`) configs and the
#                                     # peers under CUDA graphs -> $OUT/bench.tgz
#   bash bench/gpu/run_all.sh tests   # the GPU tests -> $OUT/tests.tgz
# TUNE_OPS / BENCH_OPS ("op:seconds ...") choose the ops and their time limits.
set -x
export PYTHONPATH=. PYTHONUNBUFFERED=1 ASCEND_KERNELS_CACHE_DIR=/tmp/akcache
phase=$1; r=$OUT/$phase; mkdir -p $r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $r/gpu.txt
if [ "$phase" = tune ]; then
    for op_limit in ${TUNE_OPS:-paged_attention:290 topk_topp_sampling:130 flash_attention:300}; do
        op=${op_limit%:*}; limit=${op_limit#*:}
        /usr/bin/time -f "$op: tune wall %e s (limit $limit s)" timeout -k 10 $limit \
            python -m ascend_kernels.cli tune --suite full --op $op --no-progress --jobs 14 > $r/tune_$op.md 2>> $r/tune.err
    done
    python -m ascend_kernels.cli tune --export-only >> $r/tune.err 2>&1
    cp ascend_kernels/tuned/cuda__nvidia-h200.json $r/
    grep "wall\|exported" $r/tune.err
elif [ "$phase" = bench ]; then
    timeout 25 python bench/gpu/quant_check.py > $r/quant.md 2>&1; tail -9 $r/quant.md
    timeout 90 python bench/gpu/host_time.py --json $r/host.json > $r/host.md 2>&1; cat $r/host.md
    # the peers that fit the call: flash_attention's SDPA backends (compiling flex_attention per
    # case and the fp32 reference at 16k tokens would not fit), no PyTorch-fallback provider
    for op_limit in ${BENCH_OPS:-reshape_and_cache:40 paged_attention:120 topk_topp_sampling:100 flash_attention:110}; do
        op=${op_limit%:*}; limit=${op_limit#*:}
        case $op in
            paged_attention) only="--providers triton triton-heuristic gather+sdpa flex-paged" ;;
            topk_topp_sampling) only="--providers triton triton-heuristic torch-sort torch-topk" ;;
            flash_attention) only="--providers triton triton-heuristic sdpa-cudnn sdpa-flash" ;;
            *) only="" ;;
        esac
        /usr/bin/time -f "$op: bench wall %e s (limit $limit s)" timeout -k 10 $limit \
            python -m ascend_kernels.cli bench --suite full --op $op --cuda-graph --no-progress $only \
            --results $r/full_$op --stream $r/full_$op.jsonl > $r/full_$op.log 2>> $r/bench.err
    done
    grep wall $r/bench.err
elif [ "$phase" = tests ]; then
    timeout 400 python -m pytest -q -p no:cacheprovider tests -k "cuda or gpu" > $r/gpu_tests.txt 2>&1
    tail -3 $r/gpu_tests.txt
fi
tar czf $OUT/$phase.tgz -C $OUT $phase
