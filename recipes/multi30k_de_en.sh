#!/usr/bin/env bash
# Multi30k German→English with iterative back-translation, from raw data to a served model.
#   bash recipes/multi30k_de_en.sh              default: CPU, about 1-2 hours on 2 cores
#   QUICK=1 bash recipes/multi30k_de_en.sh      tiny model and subsets, < 10 minutes
#   PROFILE=gpu bash recipes/multi30k_de_en.sh  one CUDA GPU
# Configs: recipes/configs/bt_multi30k_de_en{,_quick,_gpu}.yaml. Rerunning resumes.
exec bash "$(dirname "${BASH_SOURCE[0]}")/_multi30k_bt.sh" de_en "$@"
