#!/usr/bin/env bash
# Reproduces the her2st boards on the five shared sections:
#   holdout (train B4 C2 C3 C4, test C5)      -> leaderboards/her2st.md|html
#   lopo    (patients B and C, two folds)      -> leaderboards/her2st-lopo/her2st.md|html
# Usage: bash leaderboards/make_her2st.sh [ROOT]   (ROOT defaults to $STBENCH_SHARED/data/her2st)
# Env: PROTOCOLS="holdout lopo", SEEDS="0", ROWS (subset of the row names below),
#      BOARD=0 to skip building the boards (e.g. when several copies run in parallel).
set -uo pipefail
ROOT=${1:-${STBENCH_SHARED:-../shared}/data/her2st}
STB=${STB:-stbench}
PROTOCOLS=${PROTOCOLS:-holdout lopo}
SEEDS=${SEEDS:-0}
# row name -> stbench run arguments
declare -A ROW=(
  [mean_expression]="--method mean_expression"
  [seen_mean]="--method seen_mean"
  [bilinear]="--method bilinear"
  [shuffled_text]="--method shuffled_text"
  [textknn]="--method textknn"
  [genequery]="--method genequery"
  [sgn]="--method sgn"
  [alignst]="--method alignst"
  [alignst_shuffled_text]="--method shuffled_text method.inner=alignst"
  [alignst_no_nuclei]="--method alignst method.nuclei=false"
  [alignst_no_prompts]="--method alignst method.prompt_rounds=0"
  [alignst_no_interaction]="--method alignst method.gene_interaction=false"
  [alignst_no_align]="--method alignst method.lambda_align=0"
  [ridge]="--method ridge"
  [stnet]="--method stnet"
  [histogene]="--method histogene"
  [bleep]="--method bleep"
  [hist2st]="--method hist2st"
)
ORDER="mean_expression seen_mean bilinear shuffled_text textknn genequery alignst
  alignst_shuffled_text alignst_no_nuclei alignst_no_prompts alignst_no_interaction
  alignst_no_align sgn ridge stnet histogene bleep hist2st"
ROWS=${ROWS:-$ORDER}

for protocol in $PROTOCOLS; do
  case $protocol in
    holdout) split=(split=holdout "split.test=[C5]"); results=leaderboards/results/her2st ;;
    lopo) split=(split=lopo); results=leaderboards/results/her2st-lopo ;;
    *) echo "unknown protocol $protocol"; exit 2 ;;
  esac
  mkdir -p "$results"
  for seed in $SEEDS; do
    for row in $ROWS; do
      name="${row}_s${seed}"
      echo "== $protocol $name: ${ROW[$row]}"
      start=$(date +%s)
      # shellcheck disable=SC2086
      "$STB" run --dataset her2st "dataset.root=$ROOT" "${split[@]}" threads=1 "seed=$seed" \
        --no-progress ${ROW[$row]} --json "$results/$name.json" \
        || echo "FAILED: $protocol $name"
      echo "   wall $(( $(date +%s) - start )) s"
    done
  done
done

if [ "${BOARD:-1}" = 1 ]; then
  "$STB" leaderboard --dataset her2st --no-store --out leaderboards
  "$STB" leaderboard --dataset her2st --no-store --no-recorded -r leaderboards/results/her2st-lopo \
    --out leaderboards/her2st-lopo
fi
