#!/usr/bin/env bash
# The gene-representation board (issue 16) on the her2st holdout (train B4 C2 C3 C4, test C5):
#   {bilinear, textknn} x {minilm, tfidf, go} x seeds, each with its permuted control
#   (shuffled_text over the same inner method and representation)
#   -> leaderboards/her2st-representations/her2st.md|html
# Panel: the her2st literature panel less the 18 genes the GO representation lacks (767 genes,
# leaderboards/her2st-representations/panel_her2st_literature_go.txt), so that every
# representation is scored on the same genes with the same seeded gene splits.
# Usage: bash leaderboards/make_her2st_representations.sh [ROOT]   (default $STBENCH_SHARED/data/her2st)
# Env: SEEDS="0 1 2", METHODS="bilinear textknn", REPRESENTATIONS="minilm tfidf go",
#      EXTRA (more overrides, e.g. tracking.dir=...), BOARD=0 skips the board.
set -uo pipefail
ROOT=${1:-${STBENCH_SHARED:-../shared}/data/her2st}
STB=${STB:-stbench}
SEEDS=${SEEDS:-0 1 2}
METHODS=${METHODS:-bilinear textknn}
REPRESENTATIONS=${REPRESENTATIONS:-minilm tfidf go}
results=leaderboards/results/her2st-representations
PANEL=${PANEL:-leaderboards/her2st-representations/panel_her2st_literature_go.txt}
mkdir -p "$results"
for seed in $SEEDS; do
  for method in $METHODS; do
    for rep in $REPRESENTATIONS; do
      for control in 0 1; do
        if [ "$control" = 1 ]; then
          name="${method}_shuffled_${rep}_s${seed}"; args=(--method shuffled_text "method.inner=$method")
        else
          name="${method}_${rep}_s${seed}"; args=(--method "$method")
        fi
        echo "== $name"
        start=$(date +%s)
        "$STB" run --dataset her2st "dataset.root=$ROOT" split=holdout "split.test=[C5]" \
          genes.panel=file "genes.panel_file=$PANEL" "genes.representation=$rep" threads=1 "seed=$seed" \
          --no-progress ${EXTRA:-} "${args[@]}" --json "$results/$name.json" || echo "FAILED: $name"
        echo "   wall $(( $(date +%s) - start )) s"
      done
    done
  done
done
if [ "${BOARD:-1}" = 1 ]; then
  "$STB" leaderboard --dataset her2st --no-recorded --no-store -r "$results" --out leaderboards/her2st-representations
fi
