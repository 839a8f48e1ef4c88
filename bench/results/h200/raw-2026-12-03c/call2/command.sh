export PYTHONUNBUFFERED=1 ASCEND_KERNELS_CACHE_DIR=/tmp/akcache
R=$OUT/c2; mkdir -p $R; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $R/gpu.txt
ROOT=$PWD
(cd scratch/snap && export PYTHONPATH=. &&
/usr/bin/time -f "break %e s" timeout -k 5 60 python host_break.py > $R/host_break.md 2>&1; grep -v "^    \|^def\|^\`\`\`" $R/host_break.md
/usr/bin/time -f "host %e s" timeout -k 5 80 python bench/gpu/host_time.py --json $R/host.json > $R/host.md 2>&1; cat $R/host.md
/usr/bin/time -f "bench fa %e s" timeout -k 5 50 python -m ascend_kernels.cli bench --suite fa_b2.yaml --op flash_attention --cuda-graph --no-progress --providers triton sdpa-cudnn sdpa-flash --results $R/fa --stream $R/fa.jsonl > $R/fa.log 2>&1; tail -12 $R/fa/bench.md
/usr/bin/time -f "bench rac %e s" timeout -k 5 50 python -m ascend_kernels.cli bench --suite full --op reshape_and_cache --cuda-graph --no-progress --results $R/rac --stream $R/rac.jsonl > $R/rac.log 2>&1; tail -25 $R/rac/bench.md
)
PYTHONPATH=. /usr/bin/time -f "pa_quant %e s" timeout -k 5 110 python scratch/pa_quant/run.py > $R/pa_quant.txt 2>&1; tail -30 $R/pa_quant.txt
tar czf $OUT/call2.tgz -C $OUT c2 && rm -rf $R; ls $OUT
