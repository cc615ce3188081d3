"""Typed configuration schema.

Every YAML file under ``conf/`` extends one of these dataclasses (through its
defaults list), so a misspelt key or a value of the wrong type fails when the
config is composed, before any data is touched. Field comments are the help
text for each option.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Mode(str, Enum):
    """Which reading of the AM sub-problems to use (see docs/algorithms.md)."""

    paper = "paper"  # eqs. 4-6 as written: detached proximal term, mu on both terms, sums
    release = "release"  # the authors' released code: BN, mean losses, mu cancels in eq. 5


class Device(str, Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


# ----------------------------------------------------------------------------- data
@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = "${oc.env:AMTRAIN_DATA,data}"  # folder holding the dataset files (env AMTRAIN_DATA)
    download: bool = True  # fetch missing files with torchvision (needs internet)
    train_size: Optional[int] = None  # use only the first n training samples (null: all)
    val_size: int = 0  # hold out the last n training samples as a validation split


@dataclass
class MNISTConfig(DatasetConfig):
    name: str = "mnist"


@dataclass
class CIFAR10Config(DatasetConfig):
    name: str = "cifar10"


@dataclass
class SyntheticConfig(DatasetConfig):
    name: str = "synthetic"
    download: bool = False
    n_train: int = 2000  # training samples generated
    n_test: int = 1000  # test samples generated
    n_features: int = 20  # input dimension
    n_classes: int = 4  # number of classes
    clusters_per_class: int = 2  # Gaussian clusters per class (2+: not linearly separable)
    noise: float = 1.0  # std of each cluster around its centre
    data_seed: int = 1234  # the problem itself; the run seed only changes init and order


@dataclass
class HiggsConfig(DatasetConfig):
    name: str = "higgs"
    download: bool = False
    path: Optional[str] = None  # the converted HDF5 file (null: <root>/HIGGS/HIGGS.h5)
    standardize: bool = True  # subtract the training mean, divide by the std (stored in the file)
    block_rows: int = 65536  # rows read per contiguous block
    buffer_blocks: int = 8  # blocks shuffled together (memory: block_rows * buffer_blocks * 116 bytes)
    num_workers: int = 0  # DataLoader worker processes reading the file (0: in the training process)


# ----------------------------------------------------------------------------- model
@dataclass
class MLPConfig:
    name: str = "mlp"  # the preset's label in outputs
    arch: str = "mlp"  # which builder (amtrain.models.build_model)
    hidden: List[int] = field(default_factory=lambda: [100, 100])  # hidden widths m_1..m_L
    activation: str = "relu"  # sigma_l for hidden layers: relu | tanh | sigmoid | sign
    activations: Optional[List[str]] = None  # one per hidden layer (overrides activation), e.g. [sign, tanh]
    batchnorm: bool = False  # BatchNorm after each hidden Linear (part of f_l, so of the code)
    hidden_bias: bool = True  # bias in hidden Linear layers
    single_logit: bool = False  # binary problems: one output and the logistic loss


@dataclass
class LeNetConfig:
    name: str = "lenet5"
    arch: str = "lenet5"  # conv(6,5)-pool-conv(16,5)-pool-FC-FC-FC; codes: each layer's pre-activation map
    channels: List[int] = field(default_factory=lambda: [6, 16])  # conv layers' output channels
    kernel: int = 5
    fc: List[int] = field(default_factory=lambda: [120, 84])  # hidden FC widths
    activation: str = "relu"
    batchnorm: bool = False  # BatchNorm2d after each conv, BatchNorm1d after each hidden FC
    hidden_bias: bool = True
    single_logit: bool = False


@dataclass
class RNNConfig:
    name: str = "rnn"
    arch: str = "rnn"  # Elman RNN over the input read as a sequence (sequential MNIST: 784 one-pixel steps)
    hidden: int = 15  # d, hidden units
    n_inputs: int = 1  # inputs per step (1: one pixel at a time)
    activation: str = "tanh"  # the recurrence (fixed: tanh)
    recurrent_init: str = "default"  # W_h at start: default (torch's uniform) | orthogonal | identity
    batchnorm: bool = False  # not used: no BatchNorm in the recurrence (the key exists for mode=...)
    hidden_bias: bool = True
    single_logit: bool = False


# ----------------------------------------------------------------------------- optimisers
@dataclass
class LRScheduleConfig:
    step_epochs: int = 0  # multiply the learning rate by gamma every n epochs (0: constant)
    gamma: float = 0.5


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # rescale the gradient to this global norm when above it (0: off); RNNs
    schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = 0.003
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # rescale the gradient to this global norm when above it (0: off); RNNs
    schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)


@dataclass
class CodeSolverConfig:
    """K steps of SGD with (Nesterov) momentum from the forward value (Alg. 2.2)."""

    lr: float = 0.3  # code step size
    iters: int = 5  # K, steps per code sub-problem (eqs. 4-5)
    momentum: float = 0.9
    nesterov: bool = True
    sign_step: str = "ste"  # codes under a sign activation: ste (straight-through, the release) | accept


@dataclass
class AMAdamConfig:
    name: str = "am_adam"
    codes: CodeSolverConfig = field(default_factory=CodeSolverConfig)
    fast: bool = True  # closed-form gradients for Linear [+ BN] layers, encoding reused (false: autograd, the reference)
    lr: float = 0.008  # Adam step for every layer's local problem (eq. 6) and the output layer
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_iters: int = 1  # Adam steps per layer per mini-batch
    schedule: LRScheduleConfig = field(default_factory=lambda: LRScheduleConfig(step_epochs=8))


@dataclass
class AMMemConfig:
    name: str = "am_mem"
    codes: CodeSolverConfig = field(default_factory=CodeSolverConfig)
    fast: bool = True  # closed-form gradients for Linear [+ BN] layers, encoding reused (false: autograd, the reference)
    bcd_sweeps: int = 1  # block-coordinate-descent sweeps over the columns of W_l per batch (eq. 7)
    forget: float = 1.0  # A <- forget*A + a a^T (1: the paper's plain sums)
    solver: str = "bcd"  # bcd (Mairal et al. 2009) | exact (Cholesky solve of W A = B)
    ridge: float = 100.0  # Tikhonov term ridge*||W||^2 added to eq. 7 (both solvers; 0: the plain eq. 7)
    lr: float = 0.008  # Adam step for the output layer, fit on the loss (Alg. 2.3 line 1)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: LRScheduleConfig = field(default_factory=lambda: LRScheduleConfig(step_epochs=8))


@dataclass
class AMAdamOffConfig(AMAdamConfig):
    name: str = "am_adam_off"
    passes: int = 1  # Adam passes over the frozen local problems per AM iteration (= epoch)


@dataclass
class AMMemOffConfig(AMMemConfig):
    name: str = "am_mem_off"
    passes: int = 1  # Adam passes over the output loss per AM iteration (= epoch)


@dataclass
class ADMMConfig:
    name: str = "admm"
    beta: float = 1.0  # weight of the z = W a constraints
    gamma: float = 10.0  # weight of the a = h(z) constraints
    ridge: float = 0.0001  # ridge in the least-squares W updates, relative to the Gram's mean diagonal
    warm_start: int = 10  # first iterations without the lambda update
    output: str = "hinge"  # hinge (Taylor's binary hinge, one-vs-all) | ce (softmax / logistic prox)
    newton_steps: int = 8  # Newton steps for the ce output prox
    chunk_rows: int = 10000  # rows per chunk in Gram sums and sample-wise steps
    state_memory_gb: float = 4.0  # z, a, lambda larger than this live in memory-mapped files
    state_dir: Optional[str] = None  # where those files go (null: the system's temporary folder)


# ----------------------------------------------------------------------------- mu
@dataclass
class MuConfig:
    name: str = MISSING
    mu0: float = 0.003  # initial penalty weight mu of eq. 3


@dataclass
class ConstantMuConfig(MuConfig):
    name: str = "constant"


@dataclass
class AdditiveMuConfig(MuConfig):
    name: str = "additive"
    d_mu: float = 0.0003  # added after every mini-batch
    mu_max: float = 0.03  # cap


@dataclass
class MultiplicativeMuConfig(MuConfig):
    name: str = "multiplicative"
    factor: float = 1.1  # mu <- factor * mu after every epoch
    mu_max: float = 0.03  # cap


# ----------------------------------------------------------------------------- run
@dataclass
class EvalConfig:
    first_epoch_batches: Optional[int] = 50  # test after each of the first n batches (null: all)
    every_batches: int = 0  # also test every n batches throughout (0: off; HIGGS: 200)
    batch_size: int = 10000  # evaluation batch size (memory only)


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    mu: Any = MISSING
    mode: Mode = Mode.release
    seed: int = 0  # one seed for init, data order and everything else
    device: Device = Device.auto
    epochs: int = 1
    batch_size: int = 200
    eval: EvalConfig = field(default_factory=EvalConfig)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    progress: bool = True  # progress bar (only ever drawn on a terminal)
    name: str = "default"  # sweep name: --multirun jobs go to multirun/<name>/<overrides>
    resume: bool = True  # in a --multirun sweep, skip jobs whose directory already has DONE


SCHEMAS = {
    "dataset": {"mnist": MNISTConfig, "cifar10": CIFAR10Config, "synthetic": SyntheticConfig, "higgs": HiggsConfig},
    "model": {"mlp": MLPConfig, "lenet5": LeNetConfig, "rnn": RNNConfig},
    "optim": {"sgd": SGDConfig, "adam": AdamConfig, "am_adam": AMAdamConfig, "am_mem": AMMemConfig,
              "am_adam_off": AMAdamOffConfig, "am_mem_off": AMMemOffConfig, "admm": ADMMConfig},
    "mu": {
        "constant": ConstantMuConfig,
        "additive": AdditiveMuConfig,
        "multiplicative": MultiplicativeMuConfig,
    },
}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; YAML files extend them as ``/schema_<group>_<name>``.

    They are stored at the root (not as groups) so ``amtrain --help`` lists only real choices.
    """
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(name=f"schema_{group}_{name}", node=node)
