#!/usr/bin/env bash
# The GPU measurements that docs/seeds.md and issue 16 ask for, as one command for a lent
# device machine (its python3 has torch, pandas, matplotlib, h5py; not Hydra):
#   1. the device, torch, and the seed-axis equality tests on the device (float64, S = 3
#      stacked copies against three single runs, the MLP cases: tests/test_seeds.py);
#   2. bench.py --seeds on CUDA: S = 1, 2, 5, 10 stacked copies against single-seed steps;
#   3. bench.py --sync on CUDA: steps with a host sync after each (the old clock) against
#      none (the training loop's clock now);
#   4. one short seed-axis sweep end to end on CUDA (generated data), its folders checked.
# Every table goes to $OUT (default /tmp/device_check).
#
# Before the session, here (Hydra, OmegaConf and ANTLR travel as wheels in .whl, which
# .git/info/exclude ignores):
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform any -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   .venv/bin/python -m pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl
# Then one device call, with carry [".whl"] and a timeout of about 500 s:
#   bash scripts/device_check.sh
# Here, as a dry run on the CPU with tiny settings:
#   DEVICE=cpu QUICK=1 OUT=/tmp/dc bash scripts/device_check.sh
set -euo pipefail
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
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/amtrain .
    export PYTHONPATH=/tmp/amtrain${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -n "${QUICK:-}" ]; then
    STEPS=2; WARM=1; ROUNDS=1; MODELS="mlp_2x100"; TESTS="three_stacked and mlp_2x100 and release-False"
else
    STEPS=100; WARM=10; ROUNDS=5; MODELS="mlp_2x100 mlp_2x500 higgs_mlp binary_mlp lenet5"
    TESTS="three_stacked and mlp_2x100 or stacked_forward"
fi

"$PY" - <<'EOF' | tee "$OUT/device.txt"
import torch
print("torch", torch.__version__, "| cuda available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
EOF

# 1. S = 3 stacked copies equal three single runs, on the device
AMTRAIN_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider tests/test_seeds.py -k "$TESTS" 2>&1 \
    | tail -15 | tee "$OUT/tests.txt" || true

# 2. the seed axis: ms per seed-step and speed-up over single-seed steps
"$PY" scripts/bench.py --seeds --devices "$DEVICE" --models $MODELS --steps $STEPS --warmup $WARM \
    | tee "$OUT/seeds.md"

# 3. the clock: a host sync after every step against none
"$PY" scripts/bench.py --sync --devices "$DEVICE" --models mlp_2x100 mlp_2x500 --steps $STEPS --rounds $ROUNDS \
    | tee "$OUT/sync.md"

# 4. a seed-axis sweep end to end: 3 seeds of AM-Adam in one process, each its own folder
SWEEP=/tmp/device_check_sweep
rm -rf "$SWEEP"
"$PY" -m amtrain -m dataset=synthetic dataset.n_train=2000 dataset.n_test=500 model=mlp_2x100 optim=am_adam \
    epochs=2 progress=false device="$DEVICE" seed=0,1,2 hydra.sweep.dir="$SWEEP" 2>&1 | tail -4 | tee "$OUT/sweep.txt"
for s in 0 1 2; do
    d=$(ls -d "$SWEEP"/*seed=$s)
    if test -f "$d/DONE" && grep -q "on a seed axis" "$d/train.log"; then
        echo "seed $s: DONE, trained on the seed axis"
    else
        echo "seed $s: NOT DONE on the seed axis: see $d/train.log"
    fi
done | tee -a "$OUT/sweep.txt"
echo "device_check: all done; tables in $OUT"
