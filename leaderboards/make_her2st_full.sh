#!/usr/bin/env bash
# The full protocol on the five her2st sections (stbench sweep --protocol full), then its board.
#   bash leaderboards/make_her2st_full.sh [DATA_ROOT]      (default ../shared/data/her2st)
# Env: METHODS=a,b (only these rows), ROWS=default,tuned,... (only these row groups),
#      JOBS=N (parallel local jobs, default 1), STORE=folder of the runs (default
#      stbench-runs-her2st-full). Complete runs are skipped: rerun to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:-../shared/data/her2st}"
STORE="${STORE:-stbench-runs-her2st-full}"
args=(--protocol full --dataset her2st --jobs "${JOBS:-1}")
[ -n "${METHODS:-}" ] && args+=(--methods "$METHODS")
[ -n "${ROWS:-}" ] && args+=(--rows "$ROWS")
start=$(date +%s)
stbench sweep "${args[@]}" "dataset.root=$ROOT" "tracking.dir=$STORE"
echo "wall time: $(( $(date +%s) - start )) s"
mkdir -p leaderboards/results/her2st-full
cp "$STORE"/results/her2st/*.json leaderboards/results/her2st-full/
stbench leaderboard --dataset her2st --results leaderboards/results/her2st-full --out leaderboards/her2st-full
