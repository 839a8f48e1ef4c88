# One device call (CUDA): the GPU tests, host time per call (this tree, then the tree in
# old_tree/ if present), the flash and paged quantized/packed-GQA checks.
#   bash bench/gpu/run_all.sh   (writes into $OUT)
set -x
export PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 python -m pytest -q -p no:cacheprovider tests -k "cuda or gpu" > $OUT/gpu_tests.txt 2>&1; tail -15 $OUT/gpu_tests.txt
python bench/gpu/host_time.py --label after --json $OUT/host_after.json > $OUT/host_after.md 2>$OUT/host.err
[ -d old_tree ] && PYTHONPATH=old_tree:. python bench/gpu/host_time.py --label before --json $OUT/host_before.json > $OUT/host_before.md 2>>$OUT/host.err
python bench/gpu/host_time.py --label after-again --json $OUT/host_after2.json > $OUT/host_after2.md 2>>$OUT/host.err
cat $OUT/host_*.md
timeout 150 python bench/gpu/flash_check_quant.py > $OUT/flash_quant.md 2>&1; tail -30 $OUT/flash_quant.md
timeout 90 python bench/gpu/quant_check.py > $OUT/quant.md 2>&1; tail -10 $OUT/quant.md
