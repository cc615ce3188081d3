"""Typed configuration schema, with each key's help and allowed values.

Every YAML file under ``conf/`` extends one of these dataclasses (through its defaults
list), so a misspelt key or a value of the wrong type fails when the config is composed,
before any data is touched. Each field is declared with :func:`key`: its default, a
one-line help text (``amtrain --help`` prints it) and the values it may take, which
:func:`validate` checks in one pass over the composed config. The CLI runs that pass for
single runs, for every point of a ``-m`` sweep before the first job starts, and for
``--cfg``; :func:`amtrain.train.run` runs it again for callers from Python.

This module imports neither torch nor the package's other modules: the CLI's checks
stay fast.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Iterator, List, Mapping, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from amtrain.errors import ConfigError


def key(default, help: str, **check):
    """A schema field: its default, its help line and its allowed values.

    ``check`` may hold ``ge``, ``gt``, ``le``, ``lt`` (bounds; for a list, of each item),
    ``choices`` (a tuple of allowed values) and ``length`` (a list's exact length).
    ``None`` always passes for an Optional field (it means "off" or "all").
    """
    meta = {"help": help, "check": check}
    if isinstance(default, list) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: (list(d) if isinstance(d, list) else dataclasses.replace(d)),
                     metadata=meta)
    return field(default=default, metadata=meta)


class Mode(str, Enum):
    """Which reading of the AM sub-problems to use (see docs/algorithms.md)."""

    paper = "paper"  # eqs. 4-6 as written: detached proximal term, mu on both terms, sums
    release = "release"  # the authors' released code: BN, mean losses, mu cancels in eq. 5


class Device(str, Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


ACTIVATIONS = ("relu", "tanh", "sigmoid", "sign")


# ----------------------------------------------------------------------------- data
@dataclass
class DatasetConfig:
    name: str = key(MISSING, "the dataset")
    root: str = key("${oc.env:AMTRAIN_DATA,data}", "folder holding the dataset files (default: $AMTRAIN_DATA, else ./data)")
    download: bool = key(True, "fetch missing files with torchvision (needs internet)")
    train_size: Optional[int] = key(None, "use only the first n training samples (null: all)", ge=1)
    val_size: int = key(0, "hold out the last n training samples as a validation split (0: none)", ge=0)


@dataclass
class ImageConfig(DatasetConfig):
    scale: str = key("standard", "pixels: standard (minus the training mean, over its std) | unit (in [0, 1], as "
                                 "BCD's protocol)", choices=("standard", "unit"))


@dataclass
class MNISTConfig(ImageConfig):
    name: str = "mnist"
    files: Optional[str] = key(None, "a folder holding the four IDX files directly (null: <root>/MNIST/raw)")


@dataclass
class FashionMNISTConfig(ImageConfig):
    name: str = "fashion_mnist"
    files: Optional[str] = key(None, "a folder holding the four IDX files directly, e.g. /usr/share/datasets/"
                                     "fashion-mnist from Debian's dataset-fashion-mnist (null: <root>/FashionMNIST/raw)")


@dataclass
class CIFAR10Config(ImageConfig):
    name: str = "cifar10"


@dataclass
class SyntheticConfig(DatasetConfig):
    name: str = "synthetic"
    download: bool = key(False, "not used: the data is generated")
    n_train: int = key(2000, "training samples generated", ge=1)
    n_test: int = key(1000, "test samples generated", ge=1)
    n_features: int = key(20, "input dimension", ge=1)
    n_classes: int = key(4, "number of classes", ge=2)
    clusters_per_class: int = key(2, "Gaussian clusters per class (2 or more: not linearly separable)", ge=1)
    noise: float = key(1.0, "std of each cluster around its centre", ge=0)
    data_seed: int = key(1234, "the problem itself; the run's seed changes only init and order", ge=0)


@dataclass
class HiggsConfig(DatasetConfig):
    name: str = "higgs"
    download: bool = key(False, "not used: convert HIGGS.csv.gz with amtrain-higgs-convert")
    path: Optional[str] = key(None, "the converted HDF5 file (null: <root>/HIGGS/HIGGS.h5)")
    standardize: bool = key(True, "subtract the training mean, divide by the std (stored in the file)")
    block_rows: int = key(65536, "rows read per contiguous block", ge=1)
    buffer_blocks: int = key(8, "blocks shuffled together (memory: block_rows * buffer_blocks * 116 bytes)", ge=1)
    num_workers: int = key(0, "DataLoader worker processes reading the file (0: in the training process)", ge=0)


# ----------------------------------------------------------------------------- model
@dataclass
class MLPConfig:
    name: str = key("mlp", "the preset's label in outputs")
    arch: str = key("mlp", "which builder (amtrain.models.build_model)", choices=("mlp",))
    hidden: List[int] = key([100, 100], "hidden widths m_1..m_L", ge=1)
    activation: str = key("relu", "sigma_l of every hidden layer", choices=ACTIVATIONS)
    activations: Optional[List[str]] = key(None, "one activation per hidden layer (overrides activation), e.g. [sign, tanh]",
                                           choices=ACTIVATIONS)
    batchnorm: bool = key(False, "BatchNorm after each hidden Linear (part of f_l, so of the code)")
    hidden_bias: bool = key(True, "bias in the hidden Linear layers")
    single_logit: bool = key(False, "binary problems: one output and the logistic loss")


@dataclass
class LeNetConfig:
    name: str = key("lenet5", "the preset's label in outputs")
    arch: str = key("lenet5", "conv(6,5)-pool-conv(16,5)-pool-FC-FC-FC; codes: each layer's pre-activation map",
                    choices=("lenet5",))
    channels: List[int] = key([6, 16], "the conv layers' output channels", ge=1)
    kernel: int = key(5, "conv kernel size", ge=1)
    fc: List[int] = key([120, 84], "hidden FC widths", ge=1)
    activation: str = key("relu", "sigma_l of every hidden layer", choices=ACTIVATIONS)
    batchnorm: bool = key(False, "BatchNorm2d after each conv, BatchNorm1d after each hidden FC")
    hidden_bias: bool = key(True, "bias in the hidden layers")
    single_logit: bool = key(False, "binary problems: one output and the logistic loss")


@dataclass
class RNNConfig:
    name: str = key("rnn", "the preset's label in outputs")
    arch: str = key("rnn", "Elman RNN over the input read as a sequence (sequential MNIST: 784 one-pixel steps)",
                    choices=("rnn",))
    hidden: int = key(15, "d, hidden units", ge=1)
    n_inputs: int = key(1, "inputs per step (1: one pixel at a time; 28: one image row)", ge=1)
    activation: str = key("tanh", "the recurrence (fixed: tanh)", choices=("tanh",))
    recurrent_init: str = key("default", "W_h at start: default (torch's uniform) | orthogonal | identity",
                              choices=("default", "orthogonal", "identity"))
    readout: str = key("last", "what the prediction reads, after a ReLU: last (h_T) | mean (of h_1..h_T) | "
                               "sequence (all of h_1..h_T)", choices=("last", "mean", "sequence"))
    batchnorm: bool = key(False, "not used: no BatchNorm in the recurrence (the key exists for mode=...)")
    hidden_bias: bool = key(True, "bias of the recurrence")
    single_logit: bool = key(False, "binary problems: one output and the logistic loss")


# ----------------------------------------------------------------------------- optimisers
ALL_ARCHS = ("mlp", "lenet5", "rnn")


@dataclass
class OptimConfig:
    """What every method's config has: the class it builds, and the models it can train.

    ``MODELS`` (architectures), ``NO_BATCHNORM`` and ``RELU_ONLY`` are checked by
    :func:`validate` against the chosen model, so an impossible pair is one line at
    compose time, before any data is read.
    """

    MODELS: ClassVar[Tuple[str, ...]] = ALL_ARCHS
    NO_BATCHNORM: ClassVar[bool] = False
    RELU_ONLY: ClassVar[bool] = False

    name: str = key(MISSING, "the method")
    _target_: str = key(MISSING, "the class this config builds (amtrain.optim.build_trainer)")


@dataclass
class LRScheduleConfig:
    step_epochs: int = key(0, "multiply the learning rate by gamma every n epochs (0: constant)", ge=0)
    gamma: float = key(0.5, "the factor applied every step_epochs", gt=0)


@dataclass
class SGDConfig(OptimConfig):
    name: str = "sgd"
    _target_: str = "amtrain.optim.backprop.SGD"
    lr: float = key(0.1, "SGD step size", gt=0)
    momentum: float = key(0.0, "heavy-ball momentum", ge=0, lt=1)
    nesterov: bool = key(False, "Nesterov momentum (needs momentum > 0)")
    weight_decay: float = key(0.0, "L2 penalty", ge=0)
    grad_clip: float = key(0.0, "rescale the gradient to this global norm when above it (0: off); RNNs", ge=0)
    schedule: LRScheduleConfig = key(LRScheduleConfig(), "step-size schedule")


@dataclass
class AdamConfig(OptimConfig):
    name: str = "adam"
    _target_: str = "amtrain.optim.backprop.Adam"
    lr: float = key(0.003, "Adam step size", gt=0)
    betas: List[float] = key([0.9, 0.999], "Adam's two moment decays", length=2, ge=0, lt=1)
    weight_decay: float = key(0.0, "L2 penalty", ge=0)
    grad_clip: float = key(0.0, "rescale the gradient to this global norm when above it (0: off); RNNs", ge=0)
    schedule: LRScheduleConfig = key(LRScheduleConfig(), "step-size schedule")


@dataclass
class CodeSolverConfig:
    """K steps of SGD with (Nesterov) momentum from the forward value (Alg. 2.2)."""

    lr: float = key(0.3, "code step size", gt=0)
    iters: int = key(5, "K, steps per code sub-problem (eqs. 4-5); 0: no code update (codes stay at the forward value)",
                     ge=0)
    momentum: float = key(0.9, "momentum of the code steps", ge=0, lt=1)
    nesterov: bool = key(True, "Nesterov momentum for the code steps")
    sign_step: str = key("ste", "codes under a sign activation: ste (straight-through, the release) | accept",
                         choices=("ste", "accept"))
    order: str = key("topdown", "the RNN's code pass: topdown (Alg. 2.2: t = T..1, each step after the one above) | "
                                "jacobi (a variant: all steps at once, each from its neighbours' last iterate)",
                     choices=("topdown", "jacobi"))


@dataclass
class AMAdamConfig(OptimConfig):
    name: str = "am_adam"
    _target_: str = "amtrain.optim.am.online.AMAdam"
    codes: CodeSolverConfig = key(CodeSolverConfig(), "the code sub-problems (eqs. 4-5)")
    fast: bool = key(True, "closed-form gradients for Linear [+ BN] layers, encoding reused (false: autograd, the reference)")
    lr: float = key(0.008, "Adam step of every layer's local problem (eq. 6) and of the output layer", gt=0)
    betas: List[float] = key([0.9, 0.999], "Adam's two moment decays", length=2, ge=0, lt=1)
    weight_iters: int = key(1, "Adam steps per layer per mini-batch", ge=1)
    compile: bool = key(False, "model=rnn: each time step's code solve compiled with torch.compile (needs a C++ "
                               "compiler on the CPU; about 30 s per process to compile with a cold cache, docs/rnn.md)")
    cuda_graph: bool = key(True, "model=rnn on CUDA: replay the encoding and the code pass each as one captured CUDA "
                                 "graph rather than launch their thousands of small kernels one by one from Python "
                                 "(with optim.compile, its compiled kernels; ignored on the CPU; docs/rnn.md)")
    schedule: LRScheduleConfig = key(LRScheduleConfig(step_epochs=8), "step-size schedule (the release halves every 8 epochs)")


@dataclass
class AMMemConfig(OptimConfig):
    MODELS: ClassVar[Tuple[str, ...]] = ("mlp",)
    NO_BATCHNORM: ClassVar[bool] = True

    name: str = "am_mem"
    _target_: str = "amtrain.optim.am.online.AMMem"
    codes: CodeSolverConfig = key(CodeSolverConfig(), "the code sub-problems (eqs. 4-5)")
    fast: bool = key(True, "closed-form gradients for Linear [+ BN] layers, encoding reused (false: autograd, the reference)")
    bcd_sweeps: int = key(1, "block-coordinate-descent sweeps over the columns of W_l per batch (eq. 7)", ge=1)
    forget: float = key(1.0, "A <- forget*A + a a^T (1: the paper's plain sums)", gt=0, le=1)
    solver: str = key("bcd", "bcd (Mairal et al. 2009) | exact (Cholesky solve of W A = B)", choices=("bcd", "exact"))
    ridge: float = key(100.0, "Tikhonov term ridge*||W||^2 added to eq. 7 (both solvers; 0: the plain eq. 7)", ge=0)
    lr: float = key(0.008, "Adam step of the output layer, fit on the loss (Alg. 2.3 line 1)", gt=0)
    betas: List[float] = key([0.9, 0.999], "Adam's two moment decays", length=2, ge=0, lt=1)
    schedule: LRScheduleConfig = key(LRScheduleConfig(step_epochs=8), "step-size schedule of the output layer")


@dataclass
class AMAdamOffConfig(AMAdamConfig):
    MODELS: ClassVar[Tuple[str, ...]] = ("mlp", "lenet5")
    NO_BATCHNORM: ClassVar[bool] = True

    name: str = "am_adam_off"
    _target_: str = "amtrain.optim.am.offline.AMAdamOff"
    passes: int = key(1, "Adam passes over the frozen local problems per AM iteration (= epoch)", ge=1)


@dataclass
class AMMemOffConfig(AMMemConfig):
    name: str = "am_mem_off"
    _target_: str = "amtrain.optim.am.offline.AMMemOff"
    passes: int = key(1, "Adam passes over the output loss per AM iteration (= epoch)", ge=1)


@dataclass
class ADMMConfig(OptimConfig):
    MODELS: ClassVar[Tuple[str, ...]] = ("mlp",)
    NO_BATCHNORM: ClassVar[bool] = True
    RELU_ONLY: ClassVar[bool] = True

    name: str = "admm"
    _target_: str = "amtrain.optim.fullbatch.admm.ADMM"
    beta: float = key(1.0, "weight of the z = W a constraints", gt=0)
    gamma: float = key(10.0, "weight of the a = h(z) constraints", gt=0)
    ridge: float = key(0.0001, "ridge in the least-squares W updates, relative to the Gram's mean diagonal", ge=0)
    warm_start: int = key(10, "first iterations without the lambda update", ge=0)
    output: str = key("hinge", "hinge (Taylor's binary hinge, one-vs-all) | ce (softmax / logistic prox)",
                      choices=("hinge", "ce"))
    newton_steps: int = key(8, "Newton steps for the ce output prox", ge=1)
    chunk_rows: int = key(10000, "rows per chunk in Gram sums and sample-wise steps", ge=1)
    state_memory_gb: float = key(4.0, "z, a, lambda larger than this live in memory-mapped files", ge=0)
    state_dir: Optional[str] = key(None, "where those files go (null: the system's temporary folder)")


@dataclass
class FullBatchConfig(OptimConfig):
    """What dlADMM, mDLAM and BCD share: an MLP of Linear + ReLU layers, per-sample state
    in memory, chunked steps, the authors' initialisation."""

    MODELS: ClassVar[Tuple[str, ...]] = ("mlp",)
    NO_BATCHNORM: ClassVar[bool] = True
    RELU_ONLY: ClassVar[bool] = True

    chunk_rows: int = key(10000, "rows per chunk in the sample-wise steps and sums (memory only)", ge=1)
    state_memory_gb: float = key(8.0, "per-sample state these methods may keep in memory (a run needing more stops)",
                                 ge=0)
    init_std: Optional[float] = key(None, "re-draw every W and b from N(0, init_std^2) at the start, as the authors "
                                          "do (null: the model's own initialisation)", gt=0)
    init_bias: Optional[float] = key(None, "with init_std: every bias starts at this constant (null: drawn like W)")


@dataclass
class SteppedConfig(FullBatchConfig):
    """What mDLAM and dlADMM share: gradient steps with bounded backtracking, and FISTA for z_L."""

    backtrack_factor: float = key(2.0, "the step's alpha (theta, tau, t) <- factor * alpha while the quadratic bound "
                                       "fails", gt=1)
    backtrack_max: int = key(10, "increases before a W or a step is refused (the old block kept)", ge=0)
    fista_step: float = key(4.0, "FISTA's step eta on the loss, for z_L", gt=0)
    fista_tol: float = key(1e-4, "FISTA stops when the z_L objective (summed over samples) changes by less", gt=0)
    fista_max: int = key(500, "FISTA's steps at most", ge=1)
    init_std: Optional[float] = 0.1  # W, b ~ N(0, 0.1^2), as the authors' Net()


@dataclass
class MDLAMConfig(SteppedConfig):
    name: str = "mdlam"
    _target_: str = "amtrain.optim.fullbatch.mdlam.MDLAM"
    rho: float = key(1e-3, "rho, the weight of the linear-constraint penalties phi_l", gt=0)
    mu: float = key(0.05, "mu, the weight decay (mu/2)||W_l||^2 in F (not the AM penalty group `mu`)", ge=0)
    eps0: float = key(100.0, "eps at the start: the box |a_l - ReLU(z_l)| <= eps", gt=0)
    eps_decay: float = key(0.5, "eps <- max(eps_decay * eps, eps_min) after every iteration", gt=0, le=1)
    eps_min: float = key(1e-3, "the floor of eps", gt=0)
    accelerate: bool = key(True, "Nesterov extrapolation with the monotone safeguard (false: what the released "
                                 "script runs, its extrapolation being always zero)")
    backtrack_start: float = key(1.0, "first alpha (W steps) and t (a steps) of the backtracking", gt=0)


@dataclass
class DLADMMConfig(SteppedConfig):
    name: str = "dladmm"
    _target_: str = "amtrain.optim.fullbatch.dladmm.DLADMM"
    rho: float = key(1e-6, "rho at the start (0: no constraint terms, the dual stays 0)", ge=0)
    rho_max: float = key(0.1, "the cap of rho's schedule", gt=0)
    rho_factor: float = key(10.0, "rho <- min(factor * rho, rho_max), theta and tau times factor, when the training "
                                  "loss has risen rho_patience iterations in a row", ge=1)
    rho_patience: int = key(3, "rises of the training loss in a row that raise rho", ge=1)
    theta: float = key(1.0, "first theta of the W steps' backtracking (step 1/theta)", gt=0)
    tau: float = key(1.0, "first tau of the a steps' backtracking (step 1/tau)", gt=0)
    backtrack_max: int = 40  # the authors' loop had no bound
    fista_tol: float = 1e-3  # the authors' dlADMM value


@dataclass
class BCDConfig(FullBatchConfig):
    name: str = "bcd"
    _target_: str = "amtrain.optim.fullbatch.bcd.BCD"
    gamma: float = key(1.0, "gamma, the weight of the V_l = ReLU(U_l) couplings (and V_L = U_L)", gt=0)
    rho: float = key(1.0, "rho, the weight of the U_l = V_{l-1} W_l^T + b_l couplings", gt=0)
    alpha: float = key(5.0, "alpha, the proximal weight (alpha/2)||X - X_old||^2 of V_L, U_l, W_l, b_l", gt=0)
    init_std: Optional[float] = key(0.01, "", gt=0)
    init_bias: Optional[float] = key(0.1, "")


# ----------------------------------------------------------------------------- mu
@dataclass
class MuConfig:
    name: str = key(MISSING, "the schedule of mu")
    mu0: float = key(0.003, "initial penalty weight mu of eq. 3", gt=0)


@dataclass
class ConstantMuConfig(MuConfig):
    name: str = "constant"


@dataclass
class AdditiveMuConfig(MuConfig):
    name: str = "additive"
    d_mu: float = key(0.0003, "added to mu after every mini-batch", ge=0)
    mu_max: float = key(0.03, "cap on mu (at least mu0)", gt=0)


@dataclass
class MultiplicativeMuConfig(MuConfig):
    name: str = "multiplicative"
    factor: float = key(1.1, "mu <- factor * mu after every epoch", ge=1)
    mu_max: float = key(0.03, "cap on mu (at least mu0)", gt=0)


# ----------------------------------------------------------------------------- run
@dataclass
class EvalConfig:
    first_epoch_batches: Optional[int] = key(50, "test after each of the first n batches (null: every batch of epoch 1)", ge=0)
    every_batches: int = key(0, "also test every n batches throughout (0: off; HIGGS: 200)", ge=0)
    batch_size: int = key(10000, "evaluation batch size (memory only)", ge=1)
    objective: bool = key(True, "full-batch methods: record their own objective after every iteration "
                                "(split=train, not timed; one pass over the data)")


@dataclass
class DivergenceConfig:
    loss_factor: Optional[float] = key(100.0, "stop as diverged when the mean training loss exceeds this multiple of "
                                              "the first batch's (null: only NaN or inf stop a run)", gt=1)
    check_weights: bool = key(True, "also stop when a weight is NaN or inf (checked at every evaluation)")


@dataclass
class CheckpointConfig:
    every_minutes: Optional[float] = key(10.0, "write checkpoint.pt at the first epoch end (full-batch: iteration) "
                                               "this long after the last; a rerun of a stopped run goes on from it "
                                               "(0: every epoch; null: never)", ge=0)


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    mu: Any = MISSING
    mode: Mode = key(Mode.release, "paper (eqs. 4-7 as written) | release (the authors' code: BN, mean losses)")
    seed: int = key(0, "one seed for init, data order and everything else", ge=0)
    device: Device = key(Device.auto, "auto (cuda when available) | cpu | cuda")
    epochs: int = key(1, "passes over the training set (full-batch methods: iterations)", ge=1)
    batch_size: int = key(200, "mini-batch size (full-batch methods: rows per chunk)", ge=1)
    eval: EvalConfig = key(EvalConfig(), "when and how to evaluate")
    divergence: DivergenceConfig = key(DivergenceConfig(), "when a run counts as diverged (exit 3)")
    checkpoint: CheckpointConfig = key(CheckpointConfig(), "checkpoints a stopped run goes on from (resume=true)")
    deterministic: bool = key(False, "torch.use_deterministic_algorithms (slower on CUDA)")
    threads: Optional[int] = key(None, "torch threads per run (null: all cores; in a joblib or submitit sweep, "
                                       "cores / parallel jobs)", ge=1)
    progress: bool = key(True, "progress bar (only ever drawn on a terminal)")
    keep_freed_memory: bool = key(True, "Linux (glibc): large freed arrays stay with the process for the next step "
                                        "rather than go back to the system and fault in again (the RNN's CPU step "
                                        "1.8-2x faster, 0.2-0.6 GB more peak memory; amtrain/allocator.py)")
    name: str = key("default", "sweep name: --multirun jobs go to multirun/<name>/<overrides>")
    resume: bool = key(True, "skip a run whose folder has DONE and the same config (false: rerun, old outputs moved aside)")
    seeds_per_process: int = key(10, "a sweep over seed=... trains up to this many seeds of one configuration in "
                                     "one process, on a seed axis (online AM, SGD, Adam on the MLPs; on CUDA "
                                     "also LeNet-5, and AM-Adam on the RNN; 1: a process per seed)", ge=1)


SCHEMAS = {
    "dataset": {"mnist": MNISTConfig, "fashion_mnist": FashionMNISTConfig, "cifar10": CIFAR10Config,
                "synthetic": SyntheticConfig, "higgs": HiggsConfig},
    "model": {"mlp": MLPConfig, "lenet5": LeNetConfig, "rnn": RNNConfig},
    "optim": {"sgd": SGDConfig, "adam": AdamConfig, "am_adam": AMAdamConfig, "am_mem": AMMemConfig,
              "am_adam_off": AMAdamOffConfig, "am_mem_off": AMMemOffConfig, "admm": ADMMConfig,
              "mdlam": MDLAMConfig, "dladmm": DLADMMConfig, "bcd": BCDConfig},
    "mu": {
        "constant": ConstantMuConfig,
        "additive": AdditiveMuConfig,
        "multiplicative": MultiplicativeMuConfig,
    },
}

# Keys that say where and how a run executes, not what it computes: a finished run is reused
# on resume when every other key of its config.yaml equals the config asked for (amtrain.train).
ENVIRONMENT_KEYS = frozenset({"dataset.root", "dataset.download", "device", "threads", "progress", "resume",
                              "seeds_per_process", "name", "checkpoint.every_minutes", "keep_freed_memory"})

# Config groups picked automatically from the others; a user never chooses them.
INTERNAL_GROUPS = ("mode_defaults", "tuned")
# The config groups every run has one of, and those it may go without (``~group``)
REQUIRED_GROUPS = ("dataset", "model", "optim", "mu", "mode")
OPTIONAL_GROUPS = ("experiment", "local") + INTERNAL_GROUPS


def flat_keys(node: Any, prefix: str = "") -> dict:
    """A plain nested dict (a config.yaml, or a resolved config as a container) as
    ``{"optim.codes.lr": 0.1, ...}``: what resume and scripts/aggregate.py compare."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    out: dict = {}
    for k, v in node.items():
        out.update(flat_keys(v, f"{prefix}{k}."))
    return out


def computed_config(cfg) -> dict:
    """A composed config, resolved and flat, without the keys that say where and how a run runs
    (ENVIRONMENT_KEYS) nor Hydra's own node: what a run computes from. Plans, checkpoints and
    finished folders are compared on it."""
    from omegaconf import OmegaConf

    flat = flat_keys(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    return {k: v for k, v in flat.items() if k not in ENVIRONMENT_KEYS and k != "hydra" and not k.startswith("hydra.")}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; YAML files extend them as ``/schema_<group>_<name>``.

    They are stored at the root (not as groups) so ``amtrain --help`` lists only real choices.
    """
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(name=f"schema_{group}_{name}", node=node)


# ----------------------------------------------------------------------------- validation
def validate(cfg: DictConfig, choices: Optional[Mapping[str, Optional[str]]] = None) -> None:
    """Check every key of a composed config against its schema; raise one ConfigError line.

    ``choices`` (Hydra's ``runtime.choices``, when known) also checks that the internal
    groups were not chosen by hand for another method or model.
    """
    problems = list(_walk(cfg, ""))
    problems += _cross_checks(cfg)
    if choices is not None:
        problems += _internal_group_checks(cfg, choices)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def fields_of(node) -> Optional[dict]:
    """The schema fields of a structured config node as {name: metadata}, or None for a plain node.

    A subclass that only changes a field's default (``name: str = "sgd"``) keeps the
    help and checks its base class declared for it."""
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if kind is None or not dataclasses.is_dataclass(kind):
        return None
    out = {}
    for f in dataclasses.fields(kind):
        declared = [d.metadata for d in (getattr(base, "__dataclass_fields__", {}).get(f.name) for base in kind.__mro__)
                    if d is not None and d.metadata]
        out[f.name] = {k: next((m[k] for m in declared if m.get(k)), None) for k in ("help", "check")}
    return out


def _walk(node: DictConfig, prefix: str) -> Iterator[str]:
    fields = fields_of(node)
    if fields is None:
        return
    for name in node.keys():
        path = f"{prefix}{name}"
        if not prefix and name == "hydra":  # Hydra's own node (cfg composed with return_hydra_config)
            continue
        if name not in fields:
            yield (f"unknown config key '{path}' (added with +{path}=...): remove it; `amtrain --help` lists "
                   "every key")
            continue
        value = node._get_node(name)
        if isinstance(value, DictConfig) and fields_of(value) is not None:
            yield from _walk(value, path + ".")
            continue
        check = fields[name].get("check") or {}
        if check:
            problem = _check_value(path, OmegaConf.to_object(value) if isinstance(value, ListConfig)
                                   else node[name], check)
            if problem:
                yield problem


def _describe(check: dict) -> str:
    parts = []
    for op, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if op in check:
            parts.append(f"{sym} {check[op]:g}" if isinstance(check[op], float) else f"{sym} {check[op]}")
    return " and ".join(parts)


def _in_range(v, check: dict) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True  # types are OmegaConf's job
    return not (("gt" in check and not v > check["gt"]) or ("ge" in check and not v >= check["ge"])
                or ("lt" in check and not v < check["lt"]) or ("le" in check and not v <= check["le"]))


def _check_value(path: str, value: Any, check: dict) -> Optional[str]:
    if value is None:
        return None
    shown = _show(value)
    if "choices" in check:
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if str(getattr(v, "value", v)) not in check["choices"]]
        if bad:
            return f"{path}={shown} is not allowed: choose from {', '.join(check['choices'])}"
    if isinstance(value, list):
        if "length" in check and len(value) != check["length"]:
            rng = f", each {_describe(check)}" if _describe(check) else ""
            return f"{path}={shown} has {len(value)} values: give exactly {check['length']}{rng}"
        if not value and "ge" in check:
            return f"{path}={shown} is empty: give at least one value {_describe(check)}"
        bad = [v for v in value if not _in_range(v, check)]
        if bad:
            return f"{path}={shown} is out of range: every value must be {_describe(check)}"
        return None
    if not _in_range(value, check):
        return f"{path}={shown} is out of range: it must be {_describe(check)}"
    return None


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(getattr(value, "value", value))


def _cross_checks(cfg: DictConfig) -> List[str]:
    out = []
    mu = cfg.get("mu")
    if mu is not None and "mu_max" in mu and mu.mu_max < mu.mu0:
        out.append(f"mu.mu_max={mu.mu_max:g} is below mu.mu0={mu.mu0:g}: raise mu.mu_max or lower mu.mu0")
    ds = cfg.get("dataset")
    if ds is not None and ds.get("train_size") and ds.get("val_size") and ds.val_size >= ds.train_size:
        out.append(f"dataset.val_size={ds.val_size} leaves nothing to train on from dataset.train_size={ds.train_size}: "
                   "make val_size smaller")
    name = cfg.get("name")
    if name is not None and (not str(name).strip() or ".." in str(name).split("/")):
        out.append(f"name='{name}' is not a sweep name (its jobs go to multirun/<name>/): give one, such as "
                   "name=fig1")
    optim = cfg.get("optim")
    out += _model_checks(cfg)
    if optim is not None and "eps_min" in optim and optim.eps_min > optim.eps0:
        out.append(f"optim.eps_min={optim.eps_min:g} is above optim.eps0={optim.eps0:g}: lower eps_min")
    if optim is not None and "rho_max" in optim and optim.rho_max < optim.rho:
        out.append(f"optim.rho_max={optim.rho_max:g} is below optim.rho={optim.rho:g}: raise rho_max")
    if optim is not None and optim.get("nesterov") and optim.get("momentum") == 0:
        out.append("optim.nesterov=true needs optim.momentum > 0: set optim.momentum=0.9 or optim.nesterov=false")
    return out


def _model_checks(cfg: DictConfig) -> List[str]:
    """The method's MODELS, NO_BATCHNORM and RELU_ONLY against the chosen model."""
    optim, model = cfg.get("optim"), cfg.get("model")
    kind = OmegaConf.get_type(optim) if isinstance(optim, DictConfig) else None
    if model is None or kind is None or not issubclass(kind, OptimConfig):
        return []
    name, arch = optim.name, model.get("arch")
    if arch not in kind.MODELS:
        return [f"optim={name} cannot train model={model.name} ({arch}): it needs one of "
                f"{', '.join(kind.MODELS)} (e.g. model=mlp_2x100)"]
    out = []
    if kind.NO_BATCHNORM and model.get("batchnorm"):
        out.append(f"optim={name} has no BatchNorm layers (its sub-problems are in W a + b): set model.batchnorm=false")
    acts = list(model.get("activations") or []) or [model.get("activation")]
    if kind.RELU_ONLY and any(a != "relu" for a in acts):
        out.append(f"optim={name}'s closed forms are for ReLU layers: set model.activation=relu "
                   f"(model.activations={model.get('activations')})")
    return out


def _internal_group_checks(cfg: DictConfig, choices: Mapping[str, Optional[str]]) -> List[str]:
    """``tuned`` and ``mode_defaults`` belong to one (method, model, mode): refuse them for another."""
    optim, model, mode = choices.get("optim"), choices.get("model"), choices.get("mode")
    expected = {"tuned": f"{optim}_{model}_{mode}", "mode_defaults": f"{optim}_{mode}"}
    out = []
    for group in INTERNAL_GROUPS:
        chosen = choices.get(group)
        if chosen is not None and chosen != expected[group]:
            out.append(f"{group}={chosen} does not belong to this run (optim={optim}, model={model}, mode={mode}; "
                       f"it would be {group}={expected[group]}): drop the {group}= override, it is picked "
                       f"automatically, or give ~{group} to run without it")
    return out


def help_lines(cfg: DictConfig, prefix: str = "") -> Iterator[tuple]:
    """(key, value, help) for every leaf of a composed config, in schema order."""
    fields = fields_of(cfg) or {}
    for name in cfg.keys():
        path = f"{prefix}{name}"
        if not prefix and name == "hydra":
            continue
        node = cfg._get_node(name)
        if isinstance(node, DictConfig) and fields_of(node) is not None:
            yield from help_lines(node, path + ".")
            continue
        help_text = fields.get(name, {}).get("help") or ""
        value = OmegaConf.to_object(node) if isinstance(node, ListConfig) else cfg[name]
        yield path, _show(value) if value is not None else "null", help_text
