#!/usr/bin/env bash
# The GPU measurements that docs/seeds.md and issue 16 ask for, as one command for a lent
# device machine (its python3 has torch, pandas, matplotlib, h5py; not Hydra):
#   1. the device, torch, and the seed-axis equality tests on the device (float64, S = 3
#      stacked copies against three single runs, every covered case: tests/test_seeds.py);
#   2. bench.py --seeds on CUDA: S = 1, 2, 5, 10 stacked copies against single-seed steps;
#   3. bench.py --sync on CUDA: steps with a host sync after each (the old clock) against
#      none (the training loop's clock now);
#   4. one short seed-axis sweep end to end on CUDA (generated data), its folders checked;
#   5. the wall time of a 5-seed sweep (MNIST-sized generated data) on the seed axis against
#      a run per seed, twice each, alternated;
#   6. the Elman RNN at T = 784: tests/test_rnn.py on the device, then the step (bench_rnn.py,
#      eager and compiled): BPTT against AM-Adam's code passes, which the roadmap still lists
#      as unmeasured on a GPU;
#   7. the RNN's seed axis (AM-Adam, added 2026-12-05, used on CUDA only and not yet run on a
#      GPU): its equality tests on the device, bench.py --seeds --models rnn, and a 3-seed
#      sweep of Figure 6's settings on generated data, each seed's folder checked.
# PARTS picks the parts (default all: "tests seeds sync sweep wall rnn rnnseeds"); the MLPs'
# seed axis was measured on 2026-12-04, so a later lease can run PARTS="rnnseeds rnn" alone.
# Every table goes to $OUT (default /tmp/device_check).
#
# Before the session, here (Hydra, OmegaConf and ANTLR travel as wheels in .whl, which
# .git/info/exclude ignores):
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform any -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   .venv/bin/python -m pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl
# Then one device call, with carry [".whl"] and a timeout of 600 s (on an H200 on 2026-12-04
# parts 1-5 needed about 8.5 minutes: the tests 3.8, one by one as they then ran, the two bench
# tables about 2.5, the sweeps 1.5; part 6 had not yet been written):
#   bash scripts/device_check.sh
# results/device/h200-2026-12-04/ holds what it printed there.
# Here, as a dry run on the CPU with tiny settings:
#   DEVICE=cpu QUICK=1 OUT=/tmp/dc bash scripts/device_check.sh
set -uo pipefail  # no -e: on a one-shot device call, a step that fails must not stop the others
OUT=${OUT:-/tmp/device_check}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ! "$PY" -c "import hydra" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import amtrain.conf" 2>/dev/null; then  # amtrain itself (its configs ship as amtrain.conf)
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/amtrain .
    export PYTHONPATH=/tmp/amtrain${PYTHONPATH:+:$PYTHONPATH}
    # The checkout's amtrain/ (which lacks amtrain.conf: the configs are the top-level conf/)
    # would shadow the installed package from here, so work from a copy without it.
    WORK=/tmp/device_check_work
    rm -rf "$WORK" && mkdir -p "$WORK" && cp -r tests scripts conf pyproject.toml "$WORK" && cd "$WORK" || exit 1
fi
if [ -n "${QUICK:-}" ]; then
    STEPS=2; WARM=1; ROUNDS=1; MODELS="mlp_2x100"; TESTS="three_stacked and mlp_2x100 and release-False"
    WALL_N=2000; WALL_EPOCHS=1; WORKERS=2; RNN="--steps 1 --batch 32"; RNN_COMPILE_S=${RNN_COMPILE_S:-120}; RNN_N=2048
    RNN_SEEDS="1 2"
else
    STEPS=100; WARM=10; ROUNDS=5; MODELS="mlp_2x100 mlp_2x500 higgs_mlp binary_mlp lenet5"
    TESTS="three_stacked or stacked_forward"
    WALL_N=60000; WALL_EPOCHS=2; WORKERS=8; RNN="--steps 5"; RNN_N=20480; RNN_SEEDS="1 2 5 10"
fi
PARTS=" ${PARTS:-tests seeds sync sweep wall rnn rnnseeds} "
wants() { case "$PARTS" in *" $1 "*) return 0 ;; esac; return 1; }

"$PY" - <<'EOF' | tee "$OUT/device.txt"
import torch
print("torch", torch.__version__, "| cuda available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
EOF

# 1. S = 3 stacked copies equal three single runs, on the device. The tests spread over WORKERS
# processes (the suite's own setting keeps a file on one worker: 228 s on the H200, one by one)
if wants tests; then
    AMTRAIN_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist load \
        tests/test_seeds.py -k "$TESTS" 2>&1 \
        | grep -v -e PytestBenchmarkWarning -e 'warner(' >"$OUT/tests.txt"  # the whole log, a failure's cause too
    tail -15 "$OUT/tests.txt"
fi

# 2. the seed axis: ms per seed-step and speed-up over single-seed steps
if wants seeds; then
    "$PY" scripts/bench.py --seeds --devices "$DEVICE" --models $MODELS --steps $STEPS --warmup $WARM \
        | tee "$OUT/seeds.md"
fi

# 3. the clock: a host sync after every step against none
if wants sync; then
    "$PY" scripts/bench.py --sync --devices "$DEVICE" --models mlp_2x100 mlp_2x500 --steps $STEPS \
        --rounds $ROUNDS | tee "$OUT/sync.md"
fi

# 4. a seed-axis sweep end to end: 3 seeds of AM-Adam in one process, each its own folder
if wants sweep; then
    SWEEP=/tmp/device_check_sweep
    rm -rf "$SWEEP"
    "$PY" -m amtrain -m dataset=synthetic dataset.n_train=2000 dataset.n_test=500 model=mlp_2x100 optim=am_adam \
        epochs=2 progress=false device="$DEVICE" seed=0,1,2 hydra.sweep.dir="$SWEEP" 2>&1 | tail -4 \
        | tee "$OUT/sweep.txt"
    for s in 0 1 2; do
        d=$(ls -d "$SWEEP"/*seed=$s)
        if test -f "$d/DONE" && grep -q "on a seed axis" "$d/train.log"; then
            echo "seed $s: DONE, trained on the seed axis"
        else
            echo "seed $s: NOT DONE on the seed axis: see $d/train.log"
        fi
    done | tee -a "$OUT/sweep.txt"
fi

# 5. a 5-seed sweep's wall time, every process start included: one seed axis against a run per seed
if wants wall; then
    for spp in 5 1 5 1; do
        W=/tmp/device_check_wall
        rm -rf "$W"
        t0=$(date +%s.%N)
        "$PY" -m amtrain -m dataset=synthetic dataset.n_train=$WALL_N dataset.n_test=10000 model=mlp_2x100 \
            optim=am_adam epochs=$WALL_EPOCHS progress=false device="$DEVICE" seed=0,1,2,3,4 \
            seeds_per_process=$spp hydra.sweep.dir="$W" >"$OUT/wall_spp$spp.log" 2>&1
        t1=$(date +%s.%N)
        echo "seeds_per_process=$spp: 5 seeds x $WALL_EPOCHS epochs of AM-Adam 784-100-100-10 on $WALL_N samples:" \
            "$("$PY" -c "print(round($t1 - $t0, 1))") s, $(ls "$W"/*/DONE | wc -l) DONE"
    done | tee "$OUT/wall.txt"
fi

# 6. the RNN at T = 784: its closed forms and the fast, reference, compiled and graphed passes
# equal on the device (float64, tests/test_rnn.py, tests/test_cuda_graph.py), and a run stopped
# and resumed from its checkpoint equal to an unstopped one (test_checkpoint.py); the step, BPTT
# against AM-Adam's code passes, at Figure 6's K = 1 and the release's K = 5, eager and as CUDA
# graphs, and compiled (RNN_COMPILE_S=0 leaves that out; a timeout keeps a slow compile from
# eating the lease); then one epoch of each method through the CLI (generated 784-step data)
if wants rnn; then
    AMTRAIN_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist load \
        tests/test_rnn.py tests/test_cuda_graph.py "tests/test_checkpoint.py::test_a_stopped_run_goes_on_to_the_numbers_of_an_unstopped_one[am_adam_rnn]" \
        2>&1 | grep -v -e PytestBenchmarkWarning -e 'warner(' \
        >"$OUT/rnn_tests.txt"
    tail -8 "$OUT/rnn_tests.txt"
    "$PY" scripts/bench_rnn.py --device "$DEVICE" --readouts sequence,last --no-compile $RNN | tee "$OUT/rnn.md"
    "$PY" scripts/bench_rnn.py --device "$DEVICE" --readouts sequence --no-compile --code-iters 5 $RNN \
        | tee "$OUT/rnn_k5.md"
    if [ "${RNN_COMPILE_S:-240}" != 0 ]; then
        timeout "${RNN_COMPILE_S:-240}" "$PY" scripts/bench_rnn.py --device "$DEVICE" --readouts sequence $RNN 2>&1 \
            | tee "$OUT/rnn_compiled.md"
    fi
    for optim in am_adam sgd; do
        R=/tmp/device_check_rnn_$optim
        rm -rf "$R"
        "$PY" -m amtrain dataset=synthetic dataset.n_features=784 dataset.n_train=$RNN_N dataset.n_test=2048 \
            model=rnn model.readout=sequence optim=$optim batch_size=1024 epochs=1 progress=false \
            device="$DEVICE" hydra.run.dir="$R" >"$OUT/rnn_run_$optim.log" 2>&1
        echo "$optim, 1 epoch of $RNN_N sequences (T = 784): exit $?, $(test -f "$R/DONE" && echo DONE)," \
            "$(tail -1 "$R/train.log")"
    done | tee "$OUT/rnn_run.txt"
fi
# 7. the RNN's seed axis: S = 3 stacked copies equal three single runs on the device (float64, every
# read-out and mode), the stacked step against single-seed steps at Figure 6's batch, and a sweep
if wants rnnseeds; then
    AMTRAIN_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist load \
        tests/test_seeds.py -k "stacked_rnn" 2>&1 | grep -v -e PytestBenchmarkWarning -e 'warner(' \
        >"$OUT/rnn_seed_tests.txt"
    tail -4 "$OUT/rnn_seed_tests.txt"
    "$PY" scripts/bench.py --seeds --devices "$DEVICE" --models rnn --steps $((STEPS * 2)) --seed-counts $RNN_SEEDS \
        | tee "$OUT/rnn_seeds.md"
    R=/tmp/device_check_rnn_seeds
    rm -rf "$R"
    "$PY" -m amtrain -m dataset=synthetic dataset.n_features=784 dataset.n_train=$RNN_N dataset.n_test=2048 \
        model=rnn model.readout=sequence optim=am_adam batch_size=1024 epochs=1 progress=false \
        device="$DEVICE" seed=0,1,2 hydra.sweep.dir="$R" >"$OUT/rnn_seed_sweep.log" 2>&1
    for s in 0 1 2; do
        d=$(ls -d "$R"/*seed=$s)
        axis=$(grep -q "on a seed axis" "$d/train.log" 2>/dev/null && echo "on the seed axis" || echo "alone")
        echo "seed $s: $(test -f "$d/DONE" && echo DONE || echo "NOT DONE"), trained $axis: $(tail -1 "$d/train.log")"
    done | tee "$OUT/rnn_seed_sweep.txt"
fi
echo "device_check: all done; tables in $OUT"
