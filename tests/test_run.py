"""run(cfg, out_dir): every method learns; outputs, determinism, failure handling."""
import pandas as pd
import pytest
import torch

from amtrain.errors import ConfigError, DivergenceError
from amtrain.metrics import COLUMNS
from amtrain.train import run

METHODS = ["am_adam", "am_mem", "sgd", "adam"]
FULL_BATCH = ["am_adam_off", "am_mem_off", "admm"]
AUX_FAMILY = ["mdlam", "dladmm", "bcd"]  # they learn in tests/test_family.py


@pytest.mark.parametrize("mode", ["release", "paper"])
@pytest.mark.parametrize("optim", METHODS)
def test_each_method_learns_the_synthetic_problem(make_cfg, tmp_path, optim, mode):
    metrics = run(make_cfg(f"optim={optim}", f"mode={mode}", "epochs=2"), tmp_path)
    assert metrics["test/acc"] > 0.6  # chance is 0.25 (4 classes)


@pytest.mark.parametrize("optim", FULL_BATCH)
def test_each_full_batch_method_learns_the_synthetic_problem(make_cfg, tmp_path, optim):
    metrics = run(make_cfg(f"optim={optim}", "epochs=6"), tmp_path)
    assert metrics["test/acc"] > 0.6
    df = pd.read_csv(tmp_path / "metrics.csv")
    test_acc = df[(df.split == "test") & (df.metric == "acc")]
    assert test_acc.step.tolist() == list(range(7)) and test_acc.epoch.tolist() == list(range(7))
    assert test_acc.samples_seen.tolist() == [600 * e for e in range(7)]


def test_run_dir_contents(make_cfg, tmp_path):
    cfg = make_cfg("optim=am_adam", "epochs=2", "dataset.val_size=100")
    run(cfg, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.yaml", "metrics.csv", "train.log", "DONE", ".lock"}
    assert "name: am_adam" in (tmp_path / "config.yaml").read_text()
    assert "${" not in (tmp_path / "config.yaml").read_text()  # resolved
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert list(df.columns) == COLUMNS
    assert set(df.split) == {"train", "val", "test"}
    test_acc = df[(df.split == "test") & (df.metric == "acc")]
    # step 0, then after each of the first 3 mini-batches of epoch 1, then at the end of each epoch
    n_batches = 500 // 50
    assert test_acc.step.tolist() == [0, 1, 2, 3, n_batches, 2 * n_batches]
    assert test_acc.samples_seen.tolist() == [0, 50, 100, 150, 500, 1000]
    assert test_acc.epoch.tolist() == [0, 1, 1, 1, 1, 2]
    assert (df.wall_time.diff().dropna() >= 0).all()
    assert (df[["dataset", "model", "optim", "mode", "seed"]].drop_duplicates().values.tolist()
            == [["synthetic", "mlp_2x100", "am_adam", "release", 0]])
    # every row names the data it read (amtrain.provenance), as train.log does
    from amtrain.data import build_data

    identity = build_data(cfg.dataset).identity
    assert pd.read_csv(tmp_path / "metrics.csv", dtype={"data": str}).data.unique().tolist() == [identity]
    assert f"(500 train, data {identity[:8]})" in (tmp_path / "train.log").read_text()
    # one run id ties the three files together
    run_id = df.run_id.unique().tolist()
    assert len(run_id) == 1
    assert (tmp_path / "config.yaml").read_text().startswith(f"# amtrain run {run_id[0]}\n")
    # the second line says what code ran it (amtrain.provenance)
    from amtrain import provenance

    assert provenance.of_run(tmp_path) == {"code": provenance.code_fingerprint(), "git": provenance.git_commit(),
                                           "torch": torch.__version__}
    assert (tmp_path / "DONE").read_text().startswith(f"run_id={run_id[0]} val/acc=")
    # DONE is written last
    assert (tmp_path / "DONE").stat().st_mtime_ns >= (tmp_path / "metrics.csv").stat().st_mtime_ns


def test_first_epoch_every_batch_and_periodic_evaluation(make_cfg, tmp_path):
    run(make_cfg("optim=sgd", "eval.first_epoch_batches=null", "eval.every_batches=5", "epochs=2"), tmp_path)
    df = pd.read_csv(tmp_path / "metrics.csv")
    steps = df[(df.split == "test") & (df.metric == "acc")].step.tolist()
    assert steps == [0] + list(range(1, 13)) + [15, 20, 24]


@pytest.mark.parametrize("optim", METHODS + FULL_BATCH + AUX_FAMILY)
def test_same_seed_same_csv(make_cfg, tmp_path, optim):
    frames = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run(make_cfg(f"optim={optim}", f"seed={seed}", "epochs=2"), tmp_path / name)
        frames.append(pd.read_csv(tmp_path / name / "metrics.csv").drop(columns=["wall_time", "seed", "run_id"]))
    text = [f.to_csv(index=False) for f in frames]
    assert text[0] == text[1]
    assert text[0] != text[2]


def test_divergence_is_recorded_and_nothing_looks_complete(make_cfg, tmp_path):
    cfg = make_cfg("optim=sgd", "optim.lr=1e12", "epochs=2")
    with pytest.raises(DivergenceError, match="diverged"):
        run(cfg, tmp_path)
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "DONE").exists()
    assert (tmp_path / "metrics.partial.csv").exists()  # what was written is kept
    assert (tmp_path / "FAILED").read_text().startswith("training diverged")
    assert "failed: training diverged" in (tmp_path / "train.log").read_text()


def test_rerun_in_the_same_dir_clears_stale_markers(make_cfg, tmp_path):
    with pytest.raises(DivergenceError):
        run(make_cfg("optim=sgd", "optim.lr=1e12"), tmp_path)
    run(make_cfg("optim=sgd"), tmp_path)
    assert (tmp_path / "DONE").exists() and not (tmp_path / "FAILED").exists()


def test_incompatible_choices_fail_clearly(make_cfg, tmp_path):
    import torch

    with pytest.raises(ConfigError, match="batchnorm=false"):
        run(make_cfg("optim=am_mem", "model.batchnorm=true"), tmp_path)
    if torch.cuda.is_available():
        pytest.skip("CUDA present: device=cuda is valid here")
    with pytest.raises(ConfigError, match="device=cpu"):
        run(make_cfg("device=cuda"), tmp_path / "cuda")


def test_the_train_clock_counts_steps_on_the_cpu_and_spans_between_readings_on_cuda(monkeypatch):
    import time

    import torch

    from amtrain.train import TrainClock

    cpu = TrainClock(torch.device("cpu"))
    cpu.resume()
    with cpu.step():
        time.sleep(0.02)
    time.sleep(0.05)  # between steps (data loading, logging): not counted on the CPU
    assert 0.015 < cpu.pause() < 0.045
    syncs = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: syncs.append(1))
    gpu = TrainClock(torch.device("cuda"))
    gpu.resume()
    for _ in range(5):
        with gpu.step():  # queued work: no sync per step
            time.sleep(0.005)
    assert syncs == []
    assert 0.02 < gpu.pause() < 0.2 and syncs == [1]  # one sync, at the reading
    time.sleep(0.05)  # an evaluation: not counted
    gpu.resume()
    assert gpu.pause() < 0.2 and len(syncs) == 2


def test_evaluation_builds_no_autograd_graph():
    """evaluate() runs the net under no_grad (a graph over the whole test set would cost
    memory and time, and nothing reads it), and leaves the net's train/eval mode as it was."""
    import torch

    from amtrain.train import evaluate

    class Data:
        def eval_batches(self, split, batch_size):
            g = torch.Generator().manual_seed(0)
            for _ in range(3):
                yield torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)

    class Net(torch.nn.Linear):
        grad_seen = []

        def forward(self, x):
            self.grad_seen.append(torch.is_grad_enabled())
            return super().forward(x)

        def loss(self, out, y, reduction="mean"):
            return torch.nn.functional.cross_entropy(out, y, reduction=reduction)

        def predict(self, out):
            return out.argmax(-1)

    net = Net(4, 3).train()
    (m,) = evaluate(net, Data(), "test", 8)
    assert net.grad_seen == [False] * 3 and net.training
    assert 0.0 <= m["acc"] <= 1.0 and m["loss"] > 0
