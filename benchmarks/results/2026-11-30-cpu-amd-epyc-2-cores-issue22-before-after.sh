export EIC_NO_PROGRESS=1
PY=/work/main/.venv/bin/python
for round in 1 2; do
for tree in /tmp/wt_old /work/main; do
  echo "=== $tree round $round"
  cd $tree
  PYTHONPATH=$tree $PY benchmarks/bench_scan.py --images 20000 --workers 2 --repeat 2 --cache /tmp/bscan_cmp 2>&1 | grep -E "eic-build scan|naive"
  PYTHONPATH=$tree $PY benchmarks/bench_assemble.py --scale 0.2 --cache /tmp/ba_cmp 2>&1 | tail -4
  PYTHONPATH=$tree $PY benchmarks/bench_eval.py --images 10000 --loop-images 200 2>&1 | grep vectorised
done
done
echo done > /tmp/benchlogs/slowdown_done
