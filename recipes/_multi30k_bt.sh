#!/usr/bin/env bash
# Shared body of recipes/multi30k_{de_en,en_de}.sh: one `mt backtranslate` run does
# prepare → bitext baselines of both directions → back-translation rounds → sacreBLEU/chrF on
# val and test2016 → final model directory, then this script prints the report and the path.
#
# Usage: _multi30k_bt.sh PAIR [extra `mt backtranslate` arguments, e.g. --set backtranslate.rounds=3]
# Environment:
#   QUICK=1          tiny model, subsets, < 10 minutes on 2 CPU cores
#   PROFILE=gpu      one CUDA GPU            (default PROFILE=cpu: 1-2 hours on 2 cores)
#   MT_DATA_DIR      data directory (default ../shared/data next to the repo when it exists,
#                    else ~/.cache/mt/data, where Multi30k is downloaded if absent)
#   PY               python to use (default .venv/bin/python)
# Rerunning the same command resumes: finished stages are skipped (mt backtranslate --resume).
set -euo pipefail

pair=${1:?usage: _multi30k_bt.sh de_en|en_de [args...]}
shift
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

profile=${PROFILE:-cpu}
[ "${QUICK:-0}" = "1" ] && profile=quick
case "$profile" in
    cpu) config=recipes/configs/bt_multi30k_${pair}.yaml ;;
    quick | gpu) config=recipes/configs/bt_multi30k_${pair}_${profile}.yaml ;;
    *) echo "unknown PROFILE=$profile (use cpu or gpu, or QUICK=1)" >&2; exit 2 ;;
esac
[ -f "$config" ] || { echo "no config $config" >&2; exit 2; }

echo "recipe: Multi30k ${pair/_/→}, profile $profile, config $config"
echo "data:   ${MT_DATA_DIR:-$HOME/.cache/mt/data (downloaded if absent)}"
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# stdout carries the prepare summaries and, last, the final model directory
"$py" -m mt.cli backtranslate "$config" --resume "$@" | tee "$log"
final=$(tail -n 1 "$log")
run_dir=$(dirname "$final")

echo
cat "$run_dir/bt_report.md"
echo
echo "wall time: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
echo "report:      $run_dir/bt_report.md (plot: $run_dir/bt_report.png)"
echo "final model: $final"
echo "serve it:    mt serve --model $final"
