#!/usr/bin/env bash
# Multi30k English→German with iterative back-translation, from raw data to a served model.
#   bash recipes/multi30k_en_de.sh              default: CPU, about 1-2 hours on 2 cores
#   QUICK=1 bash recipes/multi30k_en_de.sh      tiny model and subsets, < 10 minutes
#   PROFILE=gpu bash recipes/multi30k_en_de.sh  one CUDA GPU
# Configs: recipes/configs/bt_multi30k_en_de{,_quick,_gpu}.yaml. Rerunning resumes.
exec bash "$(dirname "${BASH_SOURCE[0]}")/_multi30k_bt.sh" en_de "$@"
