#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script (about 9 minutes on an H100):
#   1. tests/test_cuda.py                       SDPA, bf16 decoding, bf16-autocast training
#   2. bench/decode_speed.py --device cuda      mt vs HF generate, bf16, batch 32 and 256
#   3. mt evaluate on test2016                  a trained CPU model decoded on the GPU (bf16, fp32)
#   4. bench/train_speed.py --device cuda       training throughput and MFU per model size
#   5. mt train recipes/configs/multi30k_de_en_gpu.yaml + mt average + mt evaluate
#                                               the base transformer, a few minutes on the GPU
# Every step has its own time limit and the script goes on when one fails; logs go to $OUT.
#
#   OUT=gpu_out MT_DATA_DIR=../shared/data MODEL=runs/multi30k_de_en_cpu45/model_avg bash bench/gpu_suite.sh
# Figures from a run are recorded in bench/results.md (with the date and the device).
set -u
OUT=${OUT:-gpu_out}
MODEL=${MODEL:-runs/multi30k_de_en_cpu45/model_avg}
DATA=${MT_DATA_DIR:?set MT_DATA_DIR to the directory holding multi30k/}
PY=${PY:-python3}
export MT_DATA_DIR=$DATA PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
D=$DATA/multi30k

step() {  # step NAME SECONDS CMD...: run with a time limit, append its output to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $* ($(date -u +%T))" | tee -a "$OUT/$name.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    echo "=== $name: exit ${PIPESTATUS[0]} ($(date -u +%T))" | tee -a "$OUT/$name.txt"
}

nvidia-smi -L
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), torch.version.cuda)"

step tests 60 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
step decode 90 $PY bench/decode_speed.py --device cuda --dtype bf16 --batch 32 --repeats 3 --skip ct2 --model-dir "$MODEL"
step decode 65 $PY bench/decode_speed.py --device cuda --dtype bf16 --batch 256 --repeats 2 --skip ct2
for args in "--beam 5 --dtype bf16" "--beam 1 --dtype bf16" "--beam 5 --dtype fp32"; do
    # shellcheck disable=SC2086
    step eval 25 $PY -m mt.cli evaluate --model "$MODEL" --src "$D/test2016.de" --ref "$D/test2016.en" \
        --device cuda --max-tokens 8192 $args
done
step train_speed 50 $PY bench/train_speed.py --device cuda --models target small base --steps 20 --no-append
cfg=recipes/configs/multi30k_de_en_gpu.yaml
run=runs/multi30k_de_en_gpu
step gpu_train 215 bash -c "$PY -m mt.cli prepare $cfg && $PY -m mt.cli train $cfg --set train.max_time_minutes=2.75 --set train.progress=off"
cp "$run/metrics.jsonl" "$OUT/gpu_train_metrics.jsonl" 2>/dev/null
cp "$run/learning_curve.png" "$OUT/gpu_learning_curve.png" 2>/dev/null
step gpu_train 40 bash -c "$PY -m mt.cli average $run --out $run/model_avg --last 5 && \
    $PY -m mt.cli evaluate --model $run/model_avg --src $D/test2016.de --ref $D/test2016.en --beam 5 --device cuda --dtype bf16 --max-tokens 8192"
echo "=== done ($(date -u +%T))"
