#!/usr/bin/env bash
# The GPU tier of the measured study, in one command that fits a 10-minute run on one GPU machine:
#   1. step_time.py at the paper's width (ResNet-18 width 64), cut layers 1 and 2, server batch
#      100, two_way loss, loop and vmap at 100 and 1000 clients against centralized MoCo, float32
#      and bf16-mixed, each measurement a process of its own;
#   2. a MocoSFL run (100 clients of 1 image a step, cut 1) and a centralized MoCo run (1 client of
#      100 images) on the real CIFAR-10 JPEGs, bf16-mixed on the GPU, at the same number of steps,
#      each reporting its test kNN top-1 (metrics.json).
# --tiny runs the same on the CPU in about a minute (width 4, 10 and 20 clients, a few steps) for
# tests/test_gpu_check.py. Writes summary.txt, gpu_check.json, log.txt and the runs' history.csv
# into --out (default: $OUT if set, else benchmarks/results/gpu_check). benchmarks/README.md says
# more.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USAGE="usage: bash benchmarks/gpu_check.sh [--tiny] [--out DIR] [--data-tar FILE] [--steps N]
       [--budget SECONDS] [--engine auto|loop|vmap] [--only bench|train] [--keep-work]
       bash benchmarks/gpu_check.sh --pack-deps DIR   (copy Hydra, OmegaConf, ANTLR to carry)
environment: PYTHON (the interpreter; default .venv/bin/python, else python3)"

die() { echo "error: $*" >&2; exit 2; }

TINY=0 OUT_DIR=${OUT:-} DATA_TAR=${MOCOSFL_CIFAR10_TAR:-} STEPS= BUDGET= ENGINE=auto ONLY=
KEEP=0 PACK=
while (($#)); do
    case $1 in
        --tiny) TINY=1 ;;
        --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
        --data-tar) DATA_TAR=${2:?--data-tar needs a file}; shift ;;
        --steps) STEPS=${2:?--steps needs a number}; shift ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
        --engine) ENGINE=${2:?--engine needs auto, loop or vmap}; shift ;;
        --only) ONLY=${2:?--only needs bench or train}; shift ;;
        --keep-work) KEEP=1 ;;
        --pack-deps) PACK=${2:?--pack-deps needs a folder}; shift ;;
        -h | --help) echo "$USAGE"; exit 0 ;;
        *) die "unknown option $1 (bash benchmarks/gpu_check.sh --help lists them)" ;;
    esac
    shift
done
[[ $ENGINE =~ ^(auto|loop|vmap)$ ]] || die "--engine $ENGINE: choose auto, loop or vmap"
[[ -z $ONLY || $ONLY =~ ^(bench|train)$ ]] || die "--only $ONLY: choose bench or train"
[[ -z $STEPS || $STEPS =~ ^[1-9][0-9]*$ ]] || die "--steps $STEPS: give a whole number >= 1"
[[ -z $BUDGET || $BUDGET =~ ^[0-9]+$ ]] || die "--budget $BUDGET: give whole seconds (0 = none)"

# -- the interpreter and the project's dependencies ------------------------------------------------
# The GPU machine starts bare and offline: its python3 holds torch, Lightning and the rest but not
# Hydra, OmegaConf and ANTLR's runtime, and `make venv` cannot download. Those three are pure
# Python: `--pack-deps .gpu_deps` copies them from this machine's interpreter, and a carried
# .gpu_deps goes on PYTHONPATH. The project itself runs from src/ (no install needed).
PY=${PYTHON:-}
if [[ -z $PY ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
command -v "$PY" >/dev/null || die "no Python interpreter $PY (set PYTHON=<interpreter>)"
export PYTHONPATH="$ROOT/src:$ROOT/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
if [[ -n $PACK ]]; then
    exec "$PY" "$ROOT/benchmarks/_gpu_check.py" pack "$PACK"
fi
missing() {
    "$PY" -c 'import importlib.util as u, sys
print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' \
        torch torchvision lightning torchmetrics hydra omegaconf antlr4 yaml numpy PIL matplotlib \
        rich
}
MISSING=$(missing)
if [[ -n $MISSING && -d $ROOT/.gpu_deps ]]; then
    export PYTHONPATH="$PYTHONPATH:$ROOT/.gpu_deps"
    MISSING=$(missing)
fi
[[ -z $MISSING ]] || die "$PY lacks $MISSING: run make venv (needs the network), or on an offline \
machine carry them: bash benchmarks/gpu_check.sh --pack-deps .gpu_deps where they are installed"

# -- settings ----------------------------------------------------------------------------------
if ((TINY)); then
    MODE=tiny DEVICE=cpu WIDTH=4 CLIENTS=10,20 SERVER_BATCH=10 STEPS=${STEPS:-5} BUDGET=${BUDGET:-0}
    BENCH=("--width=$WIDTH" --server-batch=10 --clients=10,20 --steps=2 --warmup=1 --device=cpu
        --in-process)
    TRAIN=(data.val_images=100 data.num_workers=0 trainer.accelerator=cpu
        trainer.precision=bf16-mixed num_threads=1)
    MOCOSFL_CLIENTS=10
else
    # 4000 steps: about 6-7 minutes in all on an H200, an estimate (benchmarks/README.md); the
    # budget caps the whole check at 8.5 minutes whatever the speed.
    MODE=full DEVICE=cuda WIDTH=64 CLIENTS=100,1000 SERVER_BATCH=100 STEPS=${STEPS:-4000}
    BUDGET=${BUDGET:-510}
    BENCH=(--paper --clients=100,1000 --steps=20 --warmup=5 --device=cuda)
    TRAIN=(data.num_workers=8 trainer.accelerator=gpu trainer.precision=bf16-mixed)
    MOCOSFL_CLIENTS=100
fi
if [[ $DEVICE == cuda ]]; then  # fail fast, before anything is written, extracted or timed
    GPU=$("$PY" -c 'import torch as t; print(t.cuda.is_available() and t.cuda.get_device_name())')
    [[ $GPU != False ]] || die "no CUDA device here: run this on a GPU machine, or --tiny on a CPU"
else
    GPU=cpu
fi
OUT_DIR=${OUT_DIR:-$ROOT/benchmarks/results/gpu_check}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
cleanup() { if ((KEEP)); then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
LOG=$OUT_DIR/log.txt
: >"$LOG"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
START=$SECONDS
INFO=(--info "mode=$MODE" --info "train_steps=$STEPS")

say() { echo "[gpu_check $((SECONDS - START))s] $*" | tee -a "$LOG"; }
# Runs "$@" with its output in log.txt (and on stderr), at most $1 seconds (0: no limit).
logged() {
    local limit=$1
    shift
    if ((limit > 0)); then set -- timeout --signal=TERM --kill-after=10 "$limit" "$@"; fi
    "$@" 2>&1 | tee -a "$LOG" >&2
}
left() { echo $((BUDGET - (SECONDS - START))); }
summarize() {
    "$PY" "$ROOT/benchmarks/_gpu_check.py" summary --work "$WORK" --out "$OUT_DIR" \
        --clients "$CLIENTS" "${INFO[@]}" --info "elapsed_s=$((SECONDS - START))"
}

INFO+=(--info "python=$("$PY" -c 'import sys; print(sys.version.split()[0])')")
INFO+=(--info "bench_width=$WIDTH" --info "bench_server_batch=$SERVER_BATCH" --info "only=$ONLY")
say "$MODE check on $GPU; out $OUT_DIR; work $WORK"

# -- 1. step time ---------------------------------------------------------------------------------
if [[ $ONLY != train ]]; then
    say "1. step time: cut 1 and 2, float32 and bf16-mixed, loop and vmap at $CLIENTS clients"
    limit=$((BUDGET * 11 / 20))  # 0: no limit
    T=$SECONDS
    logged "$limit" "$PY" "$ROOT/benchmarks/_gpu_check.py" bench --work "$WORK" -- "${BENCH[@]}" \
        || say "step time ended with status $?"
    INFO+=(--info "bench_s=$((SECONDS - T))")
    summarize >/dev/null || true  # a partial summary, in case the rest runs out of time
fi

# -- 2. training: MocoSFL, then centralized MoCo at the steps MocoSFL made -------------------------
if [[ $ONLY != bench ]]; then
    if [[ -z $DATA_TAR ]]; then  # the checkout's shared/ (as the GPU machine gets it), ../shared
        for candidate in {"$ROOT","$ROOT/.."}/shared/data/cifar10-jpeg.tar.gz; do
            if [[ -f $candidate ]]; then DATA_TAR=$candidate; break; fi
        done
    fi
    if [[ -n $DATA_TAR ]]; then
        [[ -f $DATA_TAR ]] || die "--data-tar $DATA_TAR: no such file"
        mkdir -p "$WORK/data"
        if ((TINY)); then  # 50 training and 20 test images a class
            tar -xzf "$DATA_TAR" -C "$WORK/data" --wildcards 'cifar10-jpeg/train/*/00[0-4]?.jpg' \
                'cifar10-jpeg/test/*/00[0-1]?.jpg'
            DESCRIBE="real CIFAR-10 JPEGs (500 training, 200 test images)"
        else
            tar -xzf "$DATA_TAR" -C "$WORK/data"
            DESCRIBE="real CIFAR-10 JPEGs (50,000 training with 5,000 held out, 10,000 test)"
        fi
        DATA=(data=imagefolder "data.root=$WORK/data/cifar10-jpeg")
    elif ((TINY)); then
        DATA=(data=synthetic data.synthetic.train_size=500 data.synthetic.test_size=200)
        DESCRIBE="synthetic images (no CIFAR-10 tarball found)"
    else
        die "no CIFAR-10 tarball: give --data-tar FILE (cifar10-jpeg.tar.gz), or carry it as \
shared/data/cifar10-jpeg.tar.gz in the checkout"
    fi
    INFO+=(--info "train_data=$DESCRIBE")
    if [[ $ENGINE == auto ]]; then  # the faster engine at the run's clients, cut 1, bf16-mixed
        ENGINE=$("$PY" "$ROOT/benchmarks/_gpu_check.py" engine --work "$WORK" --cut 1 \
            --precision bf16-mixed --clients "$MOCOSFL_CLIENTS")
    fi
    COMMON=("${DATA[@]}" "${TRAIN[@]}" "model.width=$WIDTH" sfl.cut_layer=1
        "sfl.client_engine=$ENGINE" logger=csv callbacks.knn.every_n_epochs=0
        callbacks.linear_probe=null)
    # Each run gets a time cap (Lightning's max_time, for its training loop) so that the whole
    # check ends in its budget, 60 s kept for a run's setup and kNN; a capped run reports the
    # steps it made, and centralized MoCo then trains as many.
    cap() {  # $1: the share of the time left, in percent; prints a max_time override or nothing
        ((BUDGET > 0)) || return 0
        local s=$((($(left) - 60) * $1 / 100))
        ((s > 10)) || s=10
        printf '+trainer.max_time=00:%02d:%02d:%02d' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
    }
    train() {  # $1: the run's name; the rest: its overrides
        local name=$1 T=$SECONDS
        shift
        say "2. training $name: $*"
        logged 0 "$PY" -m mocosfl.train "${COMMON[@]}" "$@" "hydra.run.dir=$WORK/train/$name" \
            || say "training $name ended with status $?"
        INFO+=(--info "${name}_s=$((SECONDS - T))")
        if [[ -f $WORK/train/$name/history.csv ]]; then
            cp "$WORK/train/$name/history.csv" "$OUT_DIR/${name}_history.csv"
        fi
    }
    rm -f "$OUT_DIR"/*_history.csv
    train mocosfl "sfl.num_clients=$MOCOSFL_CLIENTS" "sfl.clients_per_step=$MOCOSFL_CLIENTS" \
        "sfl.client_batch_size=$((SERVER_BATCH / MOCOSFL_CLIENTS))" "trainer.max_steps=$STEPS" \
        $(cap 62)
    MADE=$("$PY" -c 'import json, sys
try: print(json.load(open(sys.argv[1]))["global_step"])
except OSError: print(sys.argv[2])' "$WORK/train/mocosfl/metrics.json" "$STEPS")
    train centralized sfl.num_clients=1 sfl.clients_per_step=1 \
        "sfl.client_batch_size=$SERVER_BATCH" "trainer.max_steps=$MADE" $(cap 90)
fi

say "done in $((SECONDS - START)) s; summary.txt, gpu_check.json and log.txt in $OUT_DIR"
echo
summarize  # exits 1 when a measurement is missing or not finite
