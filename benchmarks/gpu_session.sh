#!/usr/bin/env bash
# Everything the GPU issues measure, in one command on a GPU machine, written to $OUT stage by
# stage (most important first, so a session cut short still leaves the first stages' files):
#   1. versions.txt, nvidia-smi.txt
#   2. e2e_eager.json, e2e_compiled.json: real Caffe's 20-iteration run replayed on the GPU in fp32,
#      eager and as one compiled graph per iteration (CUDA graph); each must be within 1e-5
#   3. bench_<precision>.json/.md/.log per precision: our step with channels_last + torch.compile
#      (one graph, CUDA graph), whether it waits for the device (torch.cuda.set_sync_debug_mode),
#      the plain-PyTorch peer eager and compiled at the same precision, layout and batch, our ratio
#      to it, and a whole test pass (test_iter 1000, batch 50); with SWEEP=1 every layout/compile
#   4. the data path (LOADERS=0 skips it): a synthetic 256x256 dataset prepared as raw and JPEG
#      stores (`data prepare`, the whole set as a view, the views exported as LMDBs), the cost of a
#      CaffeNet snapshot to the training loop (snapshot_cost.txt), and bench_data.json/.md/.log:
#      the loaders over the views and LMDBs with CPU and GPU decoding, end to end from the raw view
#   5. resume.json/.log: runs resumed from snapshots against an uninterrupted one (benchmarks/gpu_resume.py)
# timeline.txt says when each stage started and ended.  Compiling CaffeNet takes minutes per
# setting; with little device time, start with `PRECISIONS=bf16 LOADERS=0`.
#
#   bash benchmarks/gpu_session.sh                    # from the repository root
#   DEVICE=cpu BATCH=4 PER_CLASS=4 ITERATIONS=1 WARMUP=1 TEST_ITER=2 TEST_BATCH=2 BACKEND=aot_eager \
#       bash benchmarks/gpu_session.sh                # a dry run anywhere (aot_eager: no C++ compile)
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
WARMUP=${WARMUP:-5}
TEST_ITER=${TEST_ITER:-1000}
TEST_BATCH=${TEST_BATCH:-50}
BACKEND=${BACKEND:-inductor}
PRECISIONS=${PRECISIONS:-bf16 tf32 fp32}
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

stage() { echo "$(date -u +%FT%TZ) $*" | tee -a "$OUT/timeline.txt"; }

stage "1 versions"
(nvidia-smi || echo "no nvidia-smi") >"$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" \
    | tee "$OUT/versions.txt"

stage "2 e2e replay, eager"
"$PY" benchmarks/e2e_replay.py --device "$DEVICE" --out "$OUT/e2e_eager.json" || echo "e2e eager: FAILED (not within 1e-5, or an error above)"
stage "2 e2e replay, compiled"
"$PY" benchmarks/e2e_replay.py --device "$DEVICE" --compile "$BACKEND" --out "$OUT/e2e_compiled.json" \
    || echo "e2e compiled: FAILED (not within 1e-5, or an error above)"

settings=(--channels-last --compile)
[ "${SWEEP:-0}" = 1 ] && settings=(--sweep)
for precision in $PRECISIONS; do
    stage "3 bench $precision"
    "$PY" -m replicate bench --device "$DEVICE" --batch "$BATCH" --precision "$precision" "${settings[@]}" \
        --compile-backend "$BACKEND" --iterations "$ITERATIONS" --warmup "$WARMUP" --peer \
        --test-pass --test-iter "$TEST_ITER" --test-batch "$TEST_BATCH" \
        --out "$OUT/bench_$precision.json" --markdown "$OUT/bench_$precision.md" 2>&1 | tee "$OUT/bench_$precision.log"
done

if [ "${LOADERS:-1}" != 0 ]; then
    stage "4 data"
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
    "$PY" -m replicate bench --device "$DEVICE" --batch "$BATCH" --precision all --channels-last --compile \
        --compile-backend "$BACKEND" --iterations "$ITERATIONS" --warmup "$WARMUP" \
        --view "$DATA/raw/whole_train" --view "$DATA/jpeg/whole_train" \
        --lmdb "$DATA/raw_lmdb" --lmdb "$DATA/jpeg_lmdb" --jpeg-dir "$DATA/synth/train" \
        --out "$OUT/bench_data.json" --markdown "$OUT/bench_data.md" 2>&1 | tee "$OUT/bench_data.log"
fi

stage "5 resume"
# Resume on the GPU: an uninterrupted run's final weights against runs resumed from its snapshots
# (crops, mirrors, dropout; the CUDA generator restored from the sidecar), and against a second
# uninterrupted run, the floor cuDNN's own arithmetic sets.
"$PY" benchmarks/gpu_resume.py --device "$DEVICE" --out "$OUT/resume.json" 2>&1 | tee "$OUT/resume.log"
stage "done"
