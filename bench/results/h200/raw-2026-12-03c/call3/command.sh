export PYTHONUNBUFFERED=1 ASCEND_KERNELS_CACHE_DIR=/tmp/akcache
R=$OUT/c3; mkdir -p $R; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $R/gpu.txt
save() { tar czf $OUT/call3.tgz -C $OUT c3; }
PYTHONPATH=. timeout -k 5 40 python bench/gpu/host_time.py --label final --json $R/host.json > $R/host.md 2>&1; cat $R/host.md; save
PYTHONPATH=. timeout -k 5 20 python scratch/host_break.py > $R/host_break.md 2>&1; grep -i "full call\|match\|empty\|raw" $R/host_break.md; save
PYTHONPATH=. timeout -k 5 70 python -m pytest -q -p no:cacheprovider tests/test_launcher.py tests/test_reshape_and_cache.py tests/test_topk_topp_sampling.py tests/test_transformers_integration.py tests/test_compile.py -k "cuda or gpu" > $R/gpu_tests_1.txt 2>&1; tail -n 3 $R/gpu_tests_1.txt; save
PYTHONPATH=. timeout -k 5 160 python -m pytest -q -p no:cacheprovider tests/test_paged_attention.py tests/test_flash_attention.py -k "cuda or gpu" > $R/gpu_tests_2.txt 2>&1; tail -n 3 $R/gpu_tests_2.txt; save
(cd scratch/snap_head && PYTHONPATH=. timeout -k 5 40 python bench/gpu/host_time.py --label "before: 85d6001" --json $R/host_before.json > $R/host_before.md 2>&1); cat $R/host_before.md; save
rm -rf $R; ls $OUT
