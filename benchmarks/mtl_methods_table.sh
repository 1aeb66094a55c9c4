#!/usr/bin/env bash
# Every multi-task method of issue 9 on one recipe, several seeds, plus the single-task
# baseline of every seed; then `manytask compare` makes the table (per-task metrics, means,
# Delta_m against the single-task runs, 95% CI over seeds).
#
#   bash benchmarks/mtl_methods_table.sh RECIPE OUT_DIR "SEEDS" [key=value ...]
#   bash benchmarks/mtl_methods_table.sh mtl/census-shared_bottom runs/table-census "0 1 2"
#   bash benchmarks/mtl_methods_table.sh mtl/emotions-shared runs/table-emotions "0 1 2"
#
# Every method runs the recipe as shipped (same steps, batch, optimiser, seeds): only
# `method.name` changes, with each method's default arguments. Runs that already finished
# (results.json present) are skipped, so the script can be restarted after a kill. Set
# METHODS to a subset ("fixed upgrad") and MANYTASK (default: manytask on PATH, else
# .venv/bin/manytask) as needed. The extra key=value pairs (e.g. a reduced train.steps) are
# passed to every run alike, the single-task ones included.
set -euo pipefail

recipe=${1:?usage: mtl_methods_table.sh RECIPE OUT_DIR "SEEDS" [key=value ...]}
out=${2:?OUT_DIR}
seeds=${3:-0}
shift 3 || shift $#
overrides=("$@")
mt=${MANYTASK:-$(command -v manytask || echo .venv/bin/manytask)}
methods=${METHODS:-"fixed mean mgda mgda_ub pcgrad graddrop cagrad gradvac imtl_g nash_mtl aligned_mtl upgrad uncertainty gradnorm dwa rlw famo minmax"}
mkdir -p "$out"

run() {  # run DIR ARGS...: one run unless it already finished
  local dir=$1
  shift
  if [[ -f $dir/results.json ]]; then
    return 0
  fi
  if [[ -f $dir/checkpoints/last.pt ]]; then
    "$mt" run --quiet --resume "$dir" >"$dir.log" 2>&1 || echo "FAILED: $dir (see $dir.log)"
  else
    rm -rf "$dir"
    "$mt" run --quiet "$@" --out "$dir" >"$dir.log" 2>&1 || echo "FAILED: $dir (see $dir.log)"
  fi
  local secs
  secs=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r.get('train_seconds', '?'))" \
    "$dir/results.json" 2>/dev/null || echo "?")
  echo "$(date +%T) done $dir (train ${secs} s)"
}

for seed in $seeds; do
  dir=$out/single-s$seed
  if [[ -f $dir/results.json ]]; then
    continue
  elif [[ -d $dir ]]; then  # an interrupted set: continue it
    "$mt" run --quiet --resume "$dir" >"$dir.log" 2>&1 || echo "FAILED: $dir (see $dir.log)"
  else
    "$mt" run --quiet "$recipe" "seed=$seed" "${overrides[@]}" --single-task --out "$dir" \
      >"$dir.log" 2>&1 || echo "FAILED: $dir (see $dir.log)"
  fi
  echo "$(date +%T) done $dir"
done
for seed in $seeds; do
  for m in $methods; do
    run "$out/$m-s$seed" "$recipe" "method.name=$m" "seed=$seed" "${overrides[@]}"
  done
done

runs=()
for m in $methods; do
  for seed in $seeds; do
    [[ -f $out/$m-s$seed/results.json ]] && runs+=("$out/$m-s$seed")
  done
done
bases=()
for seed in $seeds; do
  [[ -f $out/single-s$seed/results.json ]] && bases+=("$out/single-s$seed")
done
"$mt" compare "${runs[@]}" --baseline "${bases[@]}" --out "$out/compare" >"$out/compare.log" 2>&1 \
  && echo "table: $out/compare/compare.md" || echo "compare FAILED (see $out/compare.log)"
