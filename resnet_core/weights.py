"""A run's weights as safetensors, checked against the record's own config before anything is loaded.

    <run>/model.safetensors           the trained weights (the last finite ones of a diverged run)
    <run>/model_initial.safetensors   the weights at step 0, kept where cheap and for twins (recorder.py)

Both hold exactly `build_model(cfg).state_dict()`: every parameter and buffer (BatchNorm's running
statistics and num_batches_tracked included), in contiguous layout. A file is read in three checks,
each before the next: its size against what the config's tensors need; the safetensors header,
parsed here with a size limit (the first 8 bytes of a pickle or a torch.save zip read as a header
length far beyond it); every tensor's name, dtype, shape and byte span against the config. Only
then are the bytes handed to safetensors. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .runs import WEIGHTS_FILES as FILES
from .runs import RunRecord, load_run

MAX_HEADER_BYTES = 1 << 20  # ResNet-152's header is ~90 KB; safetensors' own limit is 100 MB
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


class WeightsError(ValueError):
    """Weights that cannot be used with a record's config; the message names what is wrong."""


class MissingWeights(WeightsError):
    """The record has no weights file (records from before weights were kept have none)."""


# ---------------------------------------------------------------- what a config needs


@lru_cache(maxsize=64)
def expected(model_cfg: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (safetensors dtype, shape)} of `model_cfg`'s state dict, built on the meta device (no memory)."""
    from .model import build_model

    with torch.device("meta"):
        state = build_model(model_cfg).state_dict()
    return {k: (_DTYPES[t.dtype], tuple(t.shape)) for k, t in state.items()}


def expected_bytes(model_cfg: ModelConfig) -> int:
    """Bytes of tensor data a weights file of `model_cfg` holds."""
    sizes = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    return sum(sizes[d] * _numel(shape) for d, shape in expected(model_cfg).values())


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---------------------------------------------------------------- writing


def to_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """A state dict as safetensors bytes (CPU, contiguous copies; the caller's tensors are left alone)."""
    from safetensors.torch import save

    return save({k: t.detach().to("cpu", memory_format=torch.contiguous_format) for k, t in tensors.items()})


def save(run_dir: str | os.PathLike, which: str, tensors: Mapping[str, torch.Tensor] | bytes) -> Path:
    """Write `which` ("final" or "initial") into `run_dir` atomically (a temporary file, then os.replace)."""
    path = Path(run_dir) / _file(which)
    data = tensors if isinstance(tensors, bytes) else to_bytes(tensors)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _file(which: str) -> str:
    if which not in FILES:
        raise ValueError(f"which must be one of {', '.join(FILES)}, not {which!r}")
    return FILES[which]


# ---------------------------------------------------------------- checking and reading


def check(data: bytes, model_cfg: ModelConfig, what: str = "weights") -> dict[str, torch.Tensor]:
    """`data` parsed as safetensors after checking it holds exactly `model_cfg`'s tensors; WeightsError if not."""
    header, start = _header(data, model_cfg, what)
    need = expected(model_cfg)
    names = set(header)
    missing, extra = sorted(set(need) - names), sorted(names - set(need))
    if missing:
        raise WeightsError(f"{what}: {len(missing)} tensor(s) the config needs are missing: {_few(missing)}")
    if extra:
        raise WeightsError(f"{what}: {len(extra)} tensor(s) the config has no place for: {_few(extra)}")
    spans = []
    for name, (dtype, shape) in need.items():
        entry = header[name]
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError(f"{what}: the header entry of {name} is not a safetensors tensor entry")
        if entry["dtype"] != dtype:
            raise WeightsError(f"{what}: {name} has dtype {str(entry['dtype'])[:20]}; the config needs {dtype}")
        got = entry["shape"]
        if not isinstance(got, list) or not all(type(s) is int for s in got) or tuple(got) != shape:
            raise WeightsError(f"{what}: {name} has shape {_shape(got)}; the config needs {_shape(list(shape))}")
        offsets = entry["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise WeightsError(f"{what}: {name} has malformed data offsets")
        spans.append((offsets[0], offsets[1], name, dtype, shape))
    body = len(data) - start
    end = 0
    for begin, stop, name, dtype, shape in sorted(spans):
        size = torch.empty((), dtype=_torch_dtype(dtype)).element_size() * _numel(shape)
        if begin != end or stop - begin != size:
            raise WeightsError(f"{what}: the bytes of {name} do not follow the tensor before it or do not "
                               f"match its shape (damaged file)")
        end = stop
    if end != body:
        raise WeightsError(f"{what}: the file holds {body:,} bytes of tensor data; its header accounts for {end:,}")
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{what}: cannot be read as safetensors: {str(e)[:200]}") from None
    for name, (dtype, shape) in need.items():  # what safetensors made of them, once more
        t = tensors[name]
        if _DTYPES.get(t.dtype) != dtype or tuple(t.shape) != shape:
            raise WeightsError(f"{what}: {name} was read as {t.dtype} {tuple(t.shape)}")
    return tensors


def _header(data: bytes, model_cfg: ModelConfig, what: str) -> tuple[dict[str, Any], int]:
    """(header without __metadata__, offset of the tensor data); the limits are checked before parsing."""
    if len(data) < 8:
        raise WeightsError(f"{what}: not a safetensors file: {len(data)} bytes, too short for a header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise WeightsError(f"{what}: not a safetensors file of this net: the header would be {n:,} bytes, "
                           f"more than the {MAX_HEADER_BYTES:,} allowed (a pickle or torch.save file reads so; "
                           "they are never loaded)")
    if 8 + n > len(data):
        raise WeightsError(f"{what}: damaged: the header says {n:,} bytes but the file has {len(data) - 8:,}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WeightsError(f"{what}: not a safetensors file: the header is not JSON") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{what}: not a safetensors file: the header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise WeightsError(f"{what}: the header's __metadata__ is not a table of strings")
    return header, 8 + n


def _torch_dtype(name: str) -> torch.dtype:
    return {v: k for k, v in _DTYPES.items()}[name]


def _few(names: list[str]) -> str:
    shown = ", ".join(n[:60] for n in names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _shape(shape: Any) -> str:
    if isinstance(shape, list) and len(shape) <= 8:
        return "(" + ", ".join(str(s)[:12] for s in shape) + ("," if len(shape) == 1 else "") + ")"
    return "a malformed shape"


def path_of(run_dir: str | os.PathLike, which: str = "final") -> Path:
    return Path(run_dir) / _file(which)


def read_bytes(run_dir: str | os.PathLike, which: str, model_cfg: ModelConfig) -> bytes:
    """The file's bytes, refused unread if it is larger than the config's tensors and a full header allow."""
    path = path_of(run_dir, which)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MissingWeights(f"the record has no {'trained' if which == 'final' else 'initial'} weights "
                             f"({path.name}); records saved before weights were kept have none") from None
    limit = 8 + MAX_HEADER_BYTES + expected_bytes(model_cfg)
    if size > limit:
        raise WeightsError(f"{path.name} is {size:,} bytes; weights of this record's net take at most {limit:,}")
    with open(path, "rb") as f:
        return f.read(limit + 1)


def load(run_dir: str | os.PathLike, which: str = "final",
         model_cfg: ModelConfig | None = None) -> dict[str, torch.Tensor]:
    """The checked tensors of `run_dir`'s `which` weights; the config is read from the record unless given."""
    if model_cfg is None:
        model_cfg = _record(run_dir).model
    return check(read_bytes(run_dir, which, model_cfg), model_cfg, path_of(run_dir, which).name)


def load_model(run_dir: str | os.PathLike, which: str = "final",
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunRecord]:
    """(the record's net with its `which` weights, in eval mode on `device`, the RunRecord without tables)."""
    from .model import build_model

    rec = _record(run_dir)
    tensors = load(run_dir, which, rec.model)
    with torch.device("meta"):  # no random initialisation to throw away: the loaded tensors are assigned
        model = build_model(rec.model)
    model.load_state_dict(tensors, strict=True, assign=True)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.to(device).eval(), rec


def _record(run_dir: str | os.PathLike) -> RunRecord:
    rec = load_run(run_dir, tables=False)
    if rec.model is None:
        raise WeightsError(f"the record's config cannot be read, so its weights cannot be checked: {rec.damaged}")
    return rec
