"""Model configuration: one frozen dataclass, named presets, validation.

Everything a user can set arrives here as data and is checked once; the rest of
the code can then trust a `ModelConfig`. Every problem raises `ConfigError`,
whose message names the field, the value and what is allowed.
"""

from __future__ import annotations

import contextvars
import dataclasses
from dataclasses import dataclass, fields, replace
from typing import Any

from .limits import LIMITS, LimitError, active

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "small")
SHORTCUTS = ("A", "B", "C")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "tanh", "sigmoid")
STYLES = ("post", "pre")
INITS = ("default", "kaiming")

MAX_STAGES = 6
MAX_BLOCKS_PER_STAGE = 200
MAX_WIDTH = 2048
MAX_IN_CHANNELS = 16
MAX_CLASSES = 10_000
IMAGE_SIZE_RANGE = (8, 512)


class ConfigError(ValueError):
    """A configuration value that is not allowed: names the field, the value and what is."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field_name}={value!r} is not allowed: {allowed}")


@dataclass(frozen=True)
class ModelConfig:
    block: str = "basic"  # "basic": two 3x3 convs; "bottleneck": 1x1-3x3-1x1, 4x wider out
    layers: tuple[int, ...] = (3, 3, 3)  # blocks per stage; depth as data, as torchvision
    widths: tuple[int, ...] = (16, 32, 64)  # base channels per stage (x4 out for bottleneck)
    stem: str = "small"  # "imagenet": 7x7/2 conv + 3x3/2 max-pool; "small": 3x3/1 conv
    skip: bool = True  # False builds the plain twin: the addition disappears, nothing else
    shortcut: str = "A"  # A: zero-pad identity; B: 1x1 conv where shape changes; C: 1x1 always
    batchnorm: bool = True  # False replaces every BatchNorm with the identity
    activation: str = "relu"  # non-linearity used everywhere in the net
    style: str = "post"  # "post": act after the addition (2015); "pre": BN-act-conv (2016b)
    init: str = "default"  # "default": PyTorch's own; "kaiming": He normal, fan-out
    zero_init_residual: bool = False  # zero the last layer of every residual branch
    in_channels: int = 3  # 1 for MNIST, 3 for CIFAR and ImageNet
    num_classes: int = 10  # width of the final linear layer
    image_size: int = 32  # square input side, used for shapes, FLOPs and memory estimates

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def convs_per_block(self) -> int:
        return 3 if self.block == "bottleneck" else 2

    @property
    def depth(self) -> int:
        """Weighted layers on the main path: stem conv + block convs + fc (He et al.)."""
        return 1 + self.convs_per_block * sum(self.layers) + 1

    def plain_twin(self) -> ModelConfig:
        return replace(self, skip=False)

    def residual_twin(self) -> ModelConfig:
        return replace(self, skip=True)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        d["widths"] = list(self.widths)
        return d


# ---------------------------------------------------------------- presets

IMAGENET_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)


def cifar_config(depth: int, **overrides: Any) -> ModelConfig:
    """The CIFAR layout of He et al. 2016: depth = 6n + 2, 16/32/64 channels, option A."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError("depth", depth, "6n+2 for n >= 1 (8, 14, 20, ... 110, ...)")
    n = (depth - 2) // 6
    return make_config(
        ModelConfig(block="basic", layers=(n, n, n), widths=(16, 32, 64), stem="small",
                    shortcut="A", num_classes=10, image_size=32),
        **overrides,
    )


def imagenet_config(depth: int, **overrides: Any) -> ModelConfig:
    """torchvision's ResNet-18...152: ImageNet stem, 64/128/256/512, option B."""
    if depth not in IMAGENET_LAYOUTS:
        raise ConfigError("depth", depth, f"one of {sorted(IMAGENET_LAYOUTS)}")
    block, layers = IMAGENET_LAYOUTS[depth]
    base = ModelConfig(block=block, layers=layers, widths=(64, 128, 256, 512), stem="imagenet",
                       shortcut="B", init="kaiming", num_classes=1000, image_size=224)
    return make_config(base, **overrides)


def _preset_table() -> dict[str, ModelConfig]:
    # Built without the size checks: a server started with RESNET_MAX_PARAMS below ResNet-152's
    # 60 M must still start, and sizing all ten nets at every import cost 1.4 s of each CLI call.
    # Asking for a preset beyond the limit is refused by preset() instead.
    token = _SIZE_CHECKS.set(False)
    try:
        return _build_presets()
    finally:
        _SIZE_CHECKS.reset(token)


def _build_presets() -> dict[str, ModelConfig]:
    table: dict[str, ModelConfig] = {}
    for depth in IMAGENET_LAYOUTS:
        table[f"resnet{depth}"] = imagenet_config(depth)
    for depth in CIFAR_DEPTHS:
        table[f"resnet{depth}"] = cifar_config(depth)
    for name, cfg in list(table.items()):
        table[name.replace("resnet", "plain")] = cfg.plain_twin()
    return table


PRESETS: dict[str, ModelConfig] = {}  # filled below, once validation is defined


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset (resnet20, plain56, resnet50, ...) with any field overridden."""
    if name not in PRESETS:
        raise ConfigError("preset", name, "one of " + ", ".join(PRESETS))
    return make_config(PRESETS[name], **overrides)


def preset_name(cfg: ModelConfig) -> str | None:
    """The preset a config is exactly equal to, if any."""
    for name, p in PRESETS.items():
        if p == cfg:
            return name
    return None


def display_name(name: str) -> str:
    """How every page writes a preset's name: resnet56 -> "ResNet-56", plain56 -> "plain-56"."""
    if name.startswith("resnet"):
        return "ResNet-" + name.removeprefix("resnet")
    if name.startswith("plain"):
        return "plain-" + name.removeprefix("plain")
    return name


def net_label(cfg: ModelConfig) -> str:
    """The net's name as the pages write it, whatever its input and classes (ResNet-20 on MNIST is
    still ResNet-20): "ResNet-20", "plain-56", else "custom ResNet-8" or "custom plain-8"."""
    for name, p in PRESETS.items():
        if replace(cfg, in_channels=p.in_channels, image_size=p.image_size, num_classes=p.num_classes) == p:
            return display_name(name)
    return f"custom {'ResNet' if cfg.skip else 'plain'}-{cfg.depth}"


# ---------------------------------------------------------------- validation

FIELD_NAMES = tuple(f.name for f in fields(ModelConfig))


def make_config(base: ModelConfig | None = None, **overrides: Any) -> ModelConfig:
    """`base` with `overrides` applied, coerced and validated."""
    base = base or ModelConfig()
    for key in overrides:
        if key not in FIELD_NAMES:
            raise ConfigError(key, overrides[key], "a field of ModelConfig: " + ", ".join(FIELD_NAMES))
    values = {k: _coerce(k, v) for k, v in overrides.items()}
    cfg = replace(base, **values)
    validate(cfg)
    return cfg


def from_dict(d: dict[str, Any]) -> ModelConfig:
    """A config from JSON-like data (a run record, a query string); unknown keys are errors."""
    if not isinstance(d, dict):
        raise ConfigError("model", d, "a JSON object of ModelConfig fields")
    return make_config(ModelConfig(), **d)


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(ModelConfig)}[name]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(name, value, "true or false")
    if kind == "int":
        return _as_int(name, value)
    if kind == "tuple[int, ...]":
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, value, "a comma-separated list of whole numbers, e.g. 2,2,2,2")
        return tuple(_as_int(name, v) for v in value)
    if not isinstance(value, str):
        raise ConfigError(name, value, "a name (text)")
    return value.upper() if name == "shortcut" else value.lower()


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(name, value, "a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(name, value, "a whole number")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, value, "one of " + ", ".join(allowed))


def _check_range(name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(name, value, f"a whole number from {lo} to {hi}")


def validate(cfg: ModelConfig) -> ModelConfig:
    """Raise ConfigError for the first thing wrong with `cfg`; return it unchanged if fine."""
    _check_choice("block", cfg.block, BLOCKS)
    _check_choice("stem", cfg.stem, STEMS)
    _check_choice("shortcut", cfg.shortcut, SHORTCUTS)
    _check_choice("activation", cfg.activation, ACTIVATIONS)
    _check_choice("style", cfg.style, STYLES)
    _check_choice("init", cfg.init, INITS)
    for name in ("skip", "batchnorm", "zero_init_residual"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(name, getattr(cfg, name), "true or false")
    if not isinstance(cfg.layers, tuple) or not 1 <= len(cfg.layers) <= MAX_STAGES:
        raise ConfigError("layers", cfg.layers, f"1 to {MAX_STAGES} stages, e.g. 2,2,2,2")
    for n in cfg.layers:
        _check_range("layers", n, 1, MAX_BLOCKS_PER_STAGE)
    if not isinstance(cfg.widths, tuple) or len(cfg.widths) != len(cfg.layers):
        raise ConfigError("widths", cfg.widths,
                          f"one width per stage ({len(cfg.layers)} for layers={cfg.layers})")
    for w in cfg.widths:
        _check_range("widths", w, 1, MAX_WIDTH)
    _check_range("in_channels", cfg.in_channels, 1, MAX_IN_CHANNELS)
    _check_range("num_classes", cfg.num_classes, 2, MAX_CLASSES)
    _check_range("image_size", cfg.image_size, *IMAGE_SIZE_RANGE)
    _check_size(cfg)
    return cfg


class ModelTooLarge(ConfigError, LimitError):
    """A model beyond max_params or max_sample_mb: a ConfigError of the field "model" (so every
    caller that shows config errors shows it) that also names its limit, like every LimitError."""

    def __init__(self, limit: str, value: str, allowed: str):
        self.field, self.value, self.allowed, self.limit = "model", value, allowed, limit
        ValueError.__init__(self, f"model={value!r} is not allowed: {allowed}")


_SIZE_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("resnet_size_checks", default=True)


def _check_size(cfg: ModelConfig) -> None:
    if _SIZE_CHECKS.get():
        check_model_limits(cfg, active())


def check_model_limits(cfg: ModelConfig, limits: Any = LIMITS) -> None:
    """Parameters and per-image activations against `limits`; ModelTooLarge names the limit."""
    from .size import estimate  # local: keeps torch out of this module's import (size and model never import it)

    est = estimate(cfg)
    if est.params > limits.max_params:
        raise ModelTooLarge("max_params", f"{est.params:,} parameters",
                            f"at most {limits.max_params:,} (limit max_params, env RESNET_MAX_PARAMS)")
    mb = est.forward_bytes_per_sample / 2**20
    if mb > limits.max_sample_mb:
        raise ModelTooLarge("max_sample_mb", f"{mb:,.0f} MiB of activations per image",
                            f"at most {limits.max_sample_mb:,} MiB (limit max_sample_mb, env RESNET_MAX_SAMPLE_MB)")


PRESETS.update(_preset_table())


# ---------------------------------------------------------------- training

# The dataset names resnet_core.data serves; kept here so a config validates without importing torch.
DATASETS = ("mnist-5k", "mnist", "fashion-mnist", "cifar10")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle", "cosine")
AMP_MODES = ("auto", "off", "bf16")
SWITCHES = ("auto", "on", "off")
TRAIN_DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_LR = 1e6  # big enough to make a net diverge on purpose, small enough to stay a float


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist-5k"  # embedded default, so a class with no network can train
    steps: int = 600  # optimisation steps; ~15 epochs of mnist-5k at batch 128
    batch_size: int = 128  # the batch of He et al.'s CIFAR runs
    optimizer: str = "sgd"  # "sgd" (momentum, Nesterov optional), "adam" or "adamw"
    lr: float = 0.1  # peak learning rate; 0.1 for SGD as in He et al., ~1e-3 for Adam
    momentum: float = 0.9  # SGD only
    nesterov: bool = True  # SGD only, and only with momentum > 0; converges a little faster on short runs
    schedule: str = "onecycle"  # "constant", "onecycle" (linear up 20%, down to 0) or "cosine"
    weight_decay: float = 5e-4  # L2 for SGD/Adam, decoupled for AdamW
    seed: int = 0  # seeds the initial weights, the batch order and augmentation
    device: str = "auto"  # "auto" = CUDA, then MPS, then CPU
    log_every: int = 1  # record metrics and gradient norms every N steps; 1 suits small nets
    eval_every: int = 100  # test-split evaluation every N steps (0 = only at the end)
    amp: str = "auto"  # "auto" = bf16 autocast on CUDA only; "off"; "bf16" anywhere
    channels_last: str = "auto"  # NHWC memory format; "auto" = on for CUDA and CPU, where it is faster

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A training config from JSON-like data; unknown keys are errors, limits are not checked."""
        if not isinstance(d, dict):
            raise ConfigError("train", d, "a JSON object of TrainConfig fields")
        return make_train_config(None, limits=None, **d)


TRAIN_FIELDS = {f.name: f.type for f in fields(TrainConfig)}


def make_train_config(base: TrainConfig | None = None, limits: Any = LIMITS, **overrides: Any) -> TrainConfig:
    """`base` with `overrides` coerced and validated; steps and batch checked against `limits`."""
    base = base or TrainConfig()
    for key in overrides:
        if key not in TRAIN_FIELDS:
            raise ConfigError(key, overrides[key], "a field of TrainConfig: " + ", ".join(TRAIN_FIELDS))
    cfg = replace(base, **{k: _coerce_train(k, v) for k, v in overrides.items()})
    return validate_train(cfg, limits)


def _coerce_train(name: str, value: Any) -> Any:
    kind = TRAIN_FIELDS[name]
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(name, value, "a number")
        try:
            return float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ConfigError(name, value, "a number") from None
    if kind == "int":
        return _as_int(name, value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        truth = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False,
                 "no": False, "off": False}
        if isinstance(value, str) and value.strip().lower() in truth:
            return truth[value.strip().lower()]
        raise ConfigError(name, value, "true or false")
    if not isinstance(value, str):
        raise ConfigError(name, value, "a name (text)")
    return value.strip().lower()


def _check_float(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = isinstance(value, float) and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:  # NaN fails every comparison, so it lands here too
        raise ConfigError(name, value, f"a number {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")


def validate_train(cfg: TrainConfig, limits: Any = LIMITS) -> TrainConfig:
    """Raise ConfigError (or LimitError for a server limit) for the first thing wrong with `cfg`."""
    _check_choice("dataset", cfg.dataset, DATASETS)
    _check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _check_choice("schedule", cfg.schedule, SCHEDULES)
    _check_choice("device", cfg.device, TRAIN_DEVICES)
    _check_choice("amp", cfg.amp, AMP_MODES)
    _check_choice("channels_last", cfg.channels_last, SWITCHES)
    _check_range("steps", cfg.steps, 1, 10**9)
    _check_range("batch_size", cfg.batch_size, 1, 10**6)
    _check_range("seed", cfg.seed, 0, 2**63 - 1)
    _check_range("log_every", cfg.log_every, 1, 10**6)
    _check_range("eval_every", cfg.eval_every, 0, 10**9)
    _check_float("lr", cfg.lr, 0.0, MAX_LR, lo_open=True)
    _check_float("momentum", cfg.momentum, 0.0, 0.999)
    _check_float("weight_decay", cfg.weight_decay, 0.0, 1.0)
    if not isinstance(cfg.nesterov, bool):
        raise ConfigError("nesterov", cfg.nesterov, "true or false")
    if limits is not None:
        check_train_limits(cfg, limits)
    return cfg


def check_train_limits(cfg: TrainConfig, limits: Any = LIMITS) -> None:
    """Steps and batch size against the server's limits (LimitError names the limit and its variable)."""
    from .limits import LimitError

    if cfg.steps > limits.max_steps:
        raise LimitError("max_steps", cfg.steps, limits.max_steps, " steps")
    if cfg.batch_size > limits.max_batch_size:
        raise LimitError("max_batch_size", cfg.batch_size, limits.max_batch_size, " images a batch")
