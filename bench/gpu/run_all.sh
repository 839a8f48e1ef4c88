set -x
export PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
python bench/gpu/host_time.py --label after --json $OUT/host_after.json > $OUT/host_after.md 2>$OUT/host_after.err
PYTHONPATH=old_tree:. python bench/gpu/host_time.py --label before --json $OUT/host_before.json > $OUT/host_before.md 2>$OUT/host_before.err
python bench/gpu/host_time.py --label after-again --json $OUT/host_after2.json > $OUT/host_after2.md 2>>$OUT/host_after.err
cat $OUT/host_*.md
timeout 330 python -m pytest -q -x -p no:cacheprovider tests -k "cuda or gpu" -W ignore > $OUT/gpu_tests.txt 2>&1; echo "pytest rc=$?"
tail -5 $OUT/gpu_tests.txt
