#!/usr/bin/env bash
# rrseg on a GPU in ONE call of at most 5 minutes (issue 14). Writes one Markdown file, "$OUT/gpu.md" (and the
# parts' logs in "$OUT/gpu.log"); without OUT, ./gpu_out/. Run from anywhere:
#     bash benchmarks/gpu.sh                 # on the GPU machine
#     bash benchmarks/gpu.sh --dry-run       # (or DRY_RUN=1) here, on the CPU: every part at tiny sizes
# Parts, each under its own `timeout` (a part that overruns is stopped and the next one still runs; the
# report is rewritten after every part, so a cut-short call still leaves every table finished so far):
#   env     torch / CUDA / GPUs / timm / smp / commit                                     budget  30 s
#   checks  no host sync under torch.cuda.set_sync_debug_mode("error"): RegionRebalance forward + backward
#           (batch, per image), ConfusionMatrix.update (and = CPU result), today's path for reference
#           (benchmarks/gpu_checks.py)                                                     budget  30 s
#   branch  RR's branch alone, forward + backward, batch 8 x 512^2 features [8,512,128,128]: released
#           (upsample + one-hot) vs today's (region_pool, present regions) vs the new path
#           (RegionRebalance.forward); bf16 at 150 and 847 classes, batch and per-image pooling; fp16 at 150
#           (benchmarks/rr_branch.py)                                                      budget  40 s
#   train   20 iterations of `torchrun --nproc_per_node=<GPUs> -m rrseg train` (UPerNet Swin-T, RR,
#           train.sync_bn=true, fp16 + GradScaler, batch 8 x 128^2, synthetic data from `rrseg
#           make-synthetic`), final eval, checkpoint, report (benchmarks/gpu_train.py)    budget  75 s
#           NB: on ONE GPU the world size is 1, and rrseg starts a process group (NCCL) and converts to
#           SyncBN only above 1 (and torch's SyncBN is plain BN in a 1-rank group): torchrun, CUDA training
#           and fp16 run, NCCL and SyncBN do not; the table says which ran. They need a 2+-GPU machine.
#   peers   rrseg against mmseg / HF transformers / smp on the same models, side by side in one process:
#           UPerNet Swin-T and ConvNeXt-T, DeepLabV3+ R50-D8 (smp's as the nearest model), OCRNet HRNet-W18,
#           train step and inference at batch 8 x 512^2 in bf16, 2 warm-up + 7 interleaved repetitions; slide
#           evaluation (ConvNeXt-T, 512x683, 512^2 windows); the training loader (issue 24, benchmarks/peers.py).
#           The peers this machine lacks (mmseg: only in make test-mmseg's venv; transformers unless installed)
#           are reported as not run; no new row starts in its last 15 s                  budget  70 s
#   models  the 7 families at batch 8 x 512^2 (BEiT 640^2), all in bf16 then all in fp16 (+ GradScaler),
#           RR off / on interleaved, median of 6 steps each after 2 warm-up, peak memory; one pass per
#           (dtype, model) (benchmarks/gpu_models.py); gets whatever is left of TOTAL (285 s): no new pass
#           starts in its last 30 s                                                       budget ~130-200 s
# Estimated on an H100/H200 (from the H100 run: Swin-T 159 ms, R50 126 ms, HR48 156 ms per bf16 step, with
# build + cudnn autotuning ~15 s per model; the other families guessed from their size):
#   wheels ~5 s; env 5-10 s; checks 5-10 s; branch 15-25 s (CUDA start + 7 cases x 3 paths x 23 passes of a
#   few ms; the released path at 847 classes ~30 ms a pass); train 30-45 s (torchrun + imports ~10 s, data
#   ~3 s, 20 its ~5 s with autotuning, eval + checkpoint + report ~10 s); models 130-170 s (steps: Swin-T
#   0.16, ConvNeXt-T 0.08, Swin-B ~0.3, BEiT-B@640 ~0.4, R50 0.13, HR48 0.16, BEiT-L@640 ~1 s; x 14 steps x
#   2 dtypes = ~65 s, plus 5-8 s of build on the device + autotuning per pass x 14); peers 35-60 s (guessed:
#   per model row rrseg and smp, each ~3 s of build + 9 steps and 9 inferences; slide ~3 s; loader ~15 s).
#   Total ~235-300 s, about 5 min: the peers come out of the models' share. If the models part runs short,
#   the fp16 passes of the last families (BEiT-L first) are left out, and their rows say so.
# Dry run (this project's 2-core shared CPU, 2026-12-02): env 6-9 s, checks 4-5 s, branch 5-6 s, train
# 20-35 s (two gloo ranks), models 12-20 s; peers (2026-12-04: --quick, the full-size models at 64^2, 2
# repetitions) 50-150 s; 110-230 s in all with the machine's load. Its end-to-end test is
# marked slow and multiprocess for that reason (make test runs it, make test-fast does not):
# pytest tests/benchmarks/test_gpu_bench_script.py -k dry_run (the file's other tests
# check that the script parses, one tiny model pass, the report's sections in every part state, and that
# the branch paths compute the same loss).
# Give the device call a timeout_s of about 330 (TOTAL 285 s + interpreter and wheel start-up).
# Needs python3 with torch (+ CUDA), numpy, pyyaml, pillow, rich, matplotlib, safetensors, huggingface_hub;
# timm and segmentation-models-pytorch travel as wheels in benchmarks/wheels/ (pure Python, installed
# without network into a scratch folder; the GPU machine has no smp). rrseg itself is used from src/.
set -uo pipefail  # no -e: a part that fails must not stop the parts after it
cd "$(dirname "$0")/.."
DRY="${DRY_RUN:-0}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    *) echo "usage: bash benchmarks/gpu.sh [--dry-run]" >&2; exit 2 ;;
  esac
done
[ "$DRY" = 0 ] || DRY=1
PY="${PYTHON:-python3}"
TOTAL="${GPU_SH_TOTAL_S:-285}"
START=$SECONDS
OUTDIR="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUTDIR"
MD="$OUTDIR/gpu.md"
LOG="$OUTDIR/gpu.log"
: >"$LOG"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/rrseg_gpu.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# timm / smp from the wheels shipped here (same versions as the CPU suite), first on the path
SITE="$WORK/site"
if compgen -G "benchmarks/wheels/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    benchmarks/wheels/*.whl >>"$LOG" 2>&1 || echo "wheel install failed (see $LOG)" >&2
fi
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
export PYTHONUNBUFFERED=1

report() {
  local flag=()
  [ "$DRY" = 1 ] && flag=(--dry-run)
  "$PY" benchmarks/gpu_report.py assemble --work "$WORK" --out "$MD" "${flag[@]}" >>"$LOG" 2>&1 ||
    echo "report failed (see $LOG)" >&2
}

# part NAME BUDGET_S COMMAND...: run under timeout (SIGTERM, then SIGKILL 5 s later), log, record the status
part() {
  local name="$1" budget="$2" t0=$SECONDS rc
  shift 2
  echo "[gpu.sh] $name: budget ${budget} s, $((SECONDS - START)) s used so far" | tee -a "$LOG" >&2
  timeout -k 5 "$budget" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  cat "$WORK/$name.log" >>"$LOG"
  printf '{"part": "%s", "rc": %d, "seconds": %d, "budget": %d}\n' "$name" "$rc" $((SECONDS - t0)) "$budget" \
    >"$WORK/status_$name.json"
  echo "[gpu.sh] $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG" >&2
  report
}

if [ "$DRY" = 1 ]; then
  DEV=(--device cpu)
  BRANCH=(--batch 2 --size 64 --channels 32 --warmup 1 --reps 1)
  TRAIN=(--dry-run)
  MODELS=(--tiny --batch 2 --size 64 --beit-size 64 --warmup 1 --steps 1)
  PEERS=(--quick --reps 2 --rows upernet_swin_t loader)  # two rows: the part runs (every row: tests/benchmarks)
  B_ENV=60 B_CHECKS=60 B_BRANCH=90 B_TRAIN=150 B_PEERS=240
  TOTAL="${GPU_SH_TOTAL_S:-600}"
else
  DEV=(--device cuda)
  BRANCH=(--batch 8 --size 512 --channels 512 --warmup 3 --reps 20)
  TRAIN=()
  MODELS=(--batch 8 --size 512 --beit-size 640 --warmup 2 --steps 6)
  PEERS=(--amp bf16 --batch 8 --size 512 --warmup 2 --reps 7 --slide-size 512 683 --crop 512 --stride 341)
  B_ENV=30 B_CHECKS=30 B_BRANCH=40 B_TRAIN=75 B_PEERS=70
fi
# budgets can be overridden (e.g. to check that a part stopped at its budget leaves the others running)
B_ENV="${GPU_SH_B_ENV:-$B_ENV}" B_CHECKS="${GPU_SH_B_CHECKS:-$B_CHECKS}"
B_BRANCH="${GPU_SH_B_BRANCH:-$B_BRANCH}" B_TRAIN="${GPU_SH_B_TRAIN:-$B_TRAIN}" B_PEERS="${GPU_SH_B_PEERS:-$B_PEERS}"

part env "$B_ENV" "$PY" benchmarks/gpu_report.py env --work "$WORK"
part checks "$B_CHECKS" "$PY" benchmarks/gpu_checks.py "${DEV[@]}" --out "$WORK/checks.md" \
  --json "$WORK/checks.json"
part branch "$B_BRANCH" "$PY" benchmarks/rr_branch.py "${DEV[@]}" "${BRANCH[@]}" --classes 150 847 \
  --amp bf16 fp16 --out "$WORK/branch.md" --json "$WORK/branch.json"
part train "$B_TRAIN" "$PY" benchmarks/gpu_train.py "${TRAIN[@]}" --work "$WORK/train" \
  --deadline-s $((B_TRAIN - 5)) --out "$WORK/train.md" --json "$WORK/train.json"
part peers "$B_PEERS" "$PY" benchmarks/peers.py "${DEV[@]}" "${PEERS[@]}" --budget-s $((B_PEERS - 15)) \
  --out "$WORK/peers.md" --json "$WORK/peers.json"
# the models get what is left, less 8 s for the last report; no new pass starts in their last 30 s
B_MODELS=$((TOTAL - (SECONDS - START) - 8))
[ "$B_MODELS" -ge 40 ] || B_MODELS=40
part models "$B_MODELS" "$PY" benchmarks/gpu_models.py "${DEV[@]}" "${MODELS[@]}" --amp bf16 fp16 \
  --budget-s $((B_MODELS - 30)) --out "$WORK/models.md" --json "$WORK/models.json"

echo "[gpu.sh] done in $((SECONDS - START)) s: $MD" | tee -a "$LOG" >&2
cat "$MD"
