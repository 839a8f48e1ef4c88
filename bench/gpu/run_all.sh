# One device call: host time per call (this tree, then the tree in old_tree/ if present), the
# op layer's CPU cost, the quantized decode check, the end-to-end decode bench.
set -x
export PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
python bench/gpu/host_time.py --label after --json $OUT/host_after.json > $OUT/host_after.md 2>$OUT/host.err
[ -d old_tree ] && PYTHONPATH=old_tree:. python bench/gpu/host_time.py --label before --json $OUT/host_before.json > $OUT/host_before.md 2>>$OUT/host.err
python bench/gpu/host_time.py --label after-again --json $OUT/host_after2.json > $OUT/host_after2.md 2>>$OUT/host.err
cat $OUT/host_*.md
for i in 1 2; do
  CUDA_VISIBLE_DEVICES= python bench/cpu/op_layer_cost.py --label after >> $OUT/cpu_op_layer.md
  [ -d old_tree ] && CUDA_VISIBLE_DEVICES= PYTHONPATH=old_tree:. python bench/cpu/op_layer_cost.py --label before >> $OUT/cpu_op_layer.md
done
cat $OUT/cpu_op_layer.md
timeout 120 python bench/gpu/quant_check.py > $OUT/quant.md 2>&1; cat $OUT/quant.md | tail -15
timeout 330 python -m ascend_kernels.cli bench --suite e2e --no-progress --results $OUT/e2e > $OUT/e2e.log 2>&1; tail -30 $OUT/e2e.log
