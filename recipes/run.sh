#!/usr/bin/env bash
# Any language pair, from raw text to a served model: runs one recipe config (written by
# `mt recipe init`, e.g. recipes/configs/chren_chr_en.yaml) through `mt recipe run`:
# prepare → train → back-translation rounds (when the config has monolingual text) →
# BLEU/chrF on every test set → run_dir/final_model + run_dir/report.md.
#
# Usage: bash recipes/run.sh CONFIG [extra `mt recipe run` arguments, e.g. --set train.max_steps=100]
# Environment:
#   MT_DATA_DIR   data directory (default ../shared/data next to the repo when it exists)
#   PY            python to use (default .venv/bin/python)
# Rerunning the same command resumes: finished stages are skipped (mt recipe run --resume).
set -euo pipefail

config=${1:?usage: recipes/run.sh CONFIG [mt recipe run arguments...]}
shift
[ -f "$config" ] || { echo "no config $config" >&2; exit 2; }
config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

echo "recipe: $config"
echo "data:   ${MT_DATA_DIR:-$HOME/.cache/mt/data}"
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# stdout carries the prepare summaries and, last, the final model directory
"$py" -m mt.cli recipe run "$config" --resume "$@" | tee "$log"
final=$(tail -n 1 "$log")
run_dir=$(dirname "$final")

echo
cat "$run_dir/report.md"
echo
echo "wall time: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
echo "final model: $final"
echo "serve it:    mt serve --model $final"
