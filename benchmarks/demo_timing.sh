#!/usr/bin/env bash
# Fresh-clone `make demo`, set-up included, for commits timed back to back on one machine (issue 24, item 3):
#
#   benchmarks/demo_timing.sh [--rounds N] [--keep] REF [REF ...]      e.g.  benchmarks/demo_timing.sh main i-speed
#
# Each round clones every REF of this repository into a new folder (the order rotated from round to round, so
# that none always runs first), then times there the set-up `make demo` makes first (venv + pip: the stamp file
# .venv/.rrseg-base-installed where the Makefile has it, else .venv/.rrseg-installed) and
# `make demo` (which then only runs the demo), and prints one line per run: the seconds of each part, the total,
# and the demo's own summary.json (dataset, each training run's wall time). The clones and their 6 GB venvs are
# deleted after each run (--keep: left in place). Run it on an otherwise idle machine: two runs share the cores.
set -euo pipefail

ROUNDS=1
KEEP=0
REFS=()
while (($#)); do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) REFS+=("$1"); shift ;;
  esac
done
((${#REFS[@]})) || { echo "usage: $0 [--rounds N] [--keep] REF [REF ...]" >&2; exit 2; }

REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
WORK=${TMPDIR:-/tmp}/rrseg-demo-timing
mkdir -p "$WORK"
for ref in "${REFS[@]}"; do
  git -C "$REPO" rev-parse --verify -q "$ref^{commit}" >/dev/null || { echo "$0: unknown commit $ref" >&2; exit 2; }
done

n=${#REFS[@]}
for ((r = 0; r < ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    ref=${REFS[$(((i + r) % n))]}
    sha=$(git -C "$REPO" rev-parse --short "$ref")
    dir="$WORK/round$((r + 1))-${ref//\//_}"
    rm -rf "$dir"
    git clone -q "$REPO" "$dir"
    git -C "$dir" checkout -q "$sha"
    t0=$(date +%s.%N)
    setup=.venv/.rrseg-installed  # what `make demo` sets up first: the package alone where the Makefile has it
    grep -q '^demo: $(BASE_STAMP)' "$dir/Makefile" && setup=.venv/.rrseg-base-installed
    make -C "$dir" -s "$setup" >"$dir.setup.log" 2>&1
    t1=$(date +%s.%N)
    make -C "$dir" -s demo >"$dir.demo.log" 2>&1
    t2=$(date +%s.%N)
    summary=$("$dir/.venv/bin/python" - "$dir/runs/demo/report/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"dataset {s['dataset_seconds']} s, runs {s['wall_seconds']}, parallel {s['parallel']}")
PY
)
    awk -v ref="$ref" -v sha="$sha" -v r=$((r + 1)) -v a="$t0" -v b="$t1" -v c="$t2" -v s="$summary" 'BEGIN {
      printf "round %d %s (%s): set-up %.1f s, demo %.1f s, total %.1f s; %s\n", r, ref, sha, b - a, c - b, c - a, s }'
    ((KEEP)) || rm -rf "$dir"
  done
done
