#!/usr/bin/env bash
# Everything the GPU issue measures, in one command on a GPU machine, written to $OUT:
# nvidia-smi, a synthetic 256x256 dataset prepared as raw and JPEG stores (`data prepare`, with
# the whole set as a view, and the views exported as LMDBs), the cost of a CaffeNet snapshot to
# the training loop, and `bench` (every precision, every channels_last/compile combination with
# SWEEP=1, the loaders over the views and LMDBs with CPU and GPU decoding, end to end from the raw
# view) as JSON, Markdown (for the README) and its log.
#
#   bash benchmarks/gpu_session.sh                    # from the repository root
#   SWEEP=1 bash benchmarks/gpu_session.sh            # also time channels_last and torch.compile
#   DEVICE=cpu BATCH=4 PER_CLASS=4 ITERATIONS=1 bash benchmarks/gpu_session.sh   # a dry run anywhere
#
# Where the machine lacks this project's dependencies (lmdb, protobuf 7, submitit), bring them as
# wheels in .whl/ (ignored by git) and this script installs them into /tmp/site first, e.g. for a
# Python 3.12 machine with no network:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl lmdb protobuf==7.35.1 submitit
set -euo pipefail

OUT=${OUT:-gpu_session_out}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-256}
PER_CLASS=${PER_CLASS:-256}      # 10 classes: 2,560 images, ~500 MB of raw LMDB
ITERATIONS=${ITERATIONS:-20}
DATA=${DATA:-/tmp/replicate_bench_data}
PY=${PY:-python3}
mkdir -p "$OUT"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1

(nvidia-smi || echo "no nvidia-smi") >"$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" \
    | tee "$OUT/versions.txt"

workers=$(nproc)
"$PY" -m replicate data synth --out "$DATA/synth" --classes 10 --train-per-class "$PER_CLASS" --val-per-class 1 --size 256
for format in raw jpeg; do
    # One store per format with the whole set as a view (data prepare's path from Caffe lists),
    # and the same view exported as an ordinary Caffe LMDB, to compare the two readers.
    [ -f "$DATA/$format/whole_train/view.json" ] || "$PY" -m replicate data prepare --format "$format" \
        --train "$DATA/synth/train.txt" --train-root "$DATA/synth/train/" \
        --val "$DATA/synth/val.txt" --val-root "$DATA/synth/val/" \
        --synsets "$DATA/synth/synsets.txt" --families "$DATA/synth/families.txt" --splits 0 --reduced "" \
        --out "$DATA/$format" --workers "$workers" 2>&1 | tee "$OUT/prepare_$format.log"
    [ -d "$DATA/${format}_lmdb" ] || "$PY" -m replicate data export-lmdb "$DATA/$format/whole_train" "$DATA/${format}_lmdb"
done
du -sb "$DATA/raw/store" "$DATA/jpeg/store" | tee "$OUT/store_bytes.txt"

# A CaffeNet snapshot: what the training loop waits for, and the background write.
"$PY" benchmarks/snapshot_cost.py --device "$DEVICE" 2>&1 | tee "$OUT/snapshot_cost.txt"

sweep=()
[ "${SWEEP:-0}" = 1 ] && sweep=(--sweep)
"$PY" -m replicate bench --device "$DEVICE" --batch "$BATCH" --precision all "${sweep[@]}" \
    --iterations "$ITERATIONS" --view "$DATA/raw/whole_train" --view "$DATA/jpeg/whole_train" \
    --lmdb "$DATA/raw_lmdb" --lmdb "$DATA/jpeg_lmdb" --jpeg-dir "$DATA/synth/train" \
    --out "$OUT/bench.json" --markdown "$OUT/bench.md" 2>&1 | tee "$OUT/bench.log"

# Resume on the GPU: an uninterrupted run's final weights against runs resumed from its snapshots
# (crops, mirrors, dropout; the CUDA generator restored from the sidecar), and against a second
# uninterrupted run, the floor cuDNN's own arithmetic sets.
"$PY" benchmarks/gpu_resume.py --device "$DEVICE" --out "$OUT/resume.json" 2>&1 | tee "$OUT/resume.log"
