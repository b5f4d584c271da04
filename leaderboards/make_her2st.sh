#!/usr/bin/env bash
# Reproduces the her2st zero-shot board on the five shared sections (holdout: test C5).
# Usage: bash leaderboards/make_her2st.sh [ROOT]   (ROOT defaults to $STBENCH_SHARED/data/her2st)
set -uo pipefail
ROOT=${1:-${STBENCH_SHARED:-../shared}/data/her2st}
STB=${STB:-stbench}
COMMON=(--dataset her2st "dataset.root=$ROOT" split=holdout "split.test=[C5]" threads=1 seed=0 --no-progress)
run() { echo "== $*"; "$STB" run "${COMMON[@]}" "$@" || echo "FAILED: $*"; }
for m in mean_expression seen_mean bilinear shuffled_text textknn ridge sgn alignst; do
  run --method "$m"
done
for ablation in method.nuclei=false method.prompt_rounds=0 method.gene_interaction=false method.lambda_align=0; do
  run --method alignst "$ablation"
done
mkdir -p leaderboards/results/her2st
cp stbench-runs/results/her2st/*.json leaderboards/results/her2st/
"$STB" leaderboard --dataset her2st --out leaderboards
