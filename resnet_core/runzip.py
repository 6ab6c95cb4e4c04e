"""Run records as zip files: export for download; import of an upload from a stranger.

An import is checked in full before anything is written: its size, its member count, every
member's name (no absolute path, no `..`, no folders but one at the top), type (no links)
and size, and then the contents themselves: config.json through the same validation a
record gets on load, every parquet file's schema before its rows, the weights (model.safetensors,
model_initial.safetensors) through weights.check against the zip's own config. Only then is it written,
under a hidden name renamed into place, so a refused or half-done import leaves nothing.
Nothing is ever unpickled: a member that is not JSON, parquet or safetensors is refused by name or content.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import runs
from .limits import LIMITS

MAX_MEMBERS = 2 * runs.COMPACT_EVERY + 8  # config, two merged tables, a flush cycle of parts each
MEMBER_RE = re.compile(r"^(config\.json|(metrics|grads)(-\d{5,9})?\.parquet|model(_initial)?\.safetensors)$")
ALLOWED = ("config.json, metrics.parquet, grads.parquet and their numbered parts (metrics-00001.parquet), "
           "model.safetensors and model_initial.safetensors")
WEIGHT_FILES = set(runs.WEIGHTS_FILES.values())


class ImportRefused(ValueError):
    """An uploaded zip that is not a run record; the message says why, in words a user can act on."""


def export_zip(run_dir: str | os.PathLike) -> bytes:
    run_dir = Path(run_dir)
    for attempt in range(3):
        try:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for p in sorted(run_dir.iterdir()):
                    if p.is_file() and MEMBER_RE.match(p.name):
                        zf.writestr(f"{run_dir.name}/{p.name}", p.read_bytes())
            return buf.getvalue()
        except FileNotFoundError:  # a live writer merged its parts while we read: start again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _read_upload(file: Any, limit: int) -> bytes:
    """The upload's bytes, reading at most limit + 1 of them (bytes, a path or a file object)."""
    if isinstance(file, (bytes, bytearray, memoryview)):
        data = bytes(file)
    elif isinstance(file, (str, os.PathLike)):
        size = os.path.getsize(file)
        if size > limit:
            raise ImportRefused(_too_big(size, limit))
        with open(file, "rb") as f:
            data = f.read(limit + 1)
    else:
        if hasattr(file, "seek"):
            file.seek(0)
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ImportRefused(_too_big(len(data), limit))
    return data


def _too_big(size: int, limit: int) -> str:
    return (f"the file is {size / 2**20:.1f} MiB or more; the limit max_upload_mb is {limit // 2**20} MiB "
            "(raise it with the environment variable RESNET_MAX_UPLOAD_MB)")


def _check_names(infos: list[zipfile.ZipInfo], limit: int) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """(top folder or "", {file name: info}); ImportRefused at the first bad member."""
    if len(infos) > MAX_MEMBERS:
        raise ImportRefused(f"the zip has {len(infos)} members; a run record has at most {MAX_MEMBERS}")
    tops, members, total = set(), {}, 0
    for info in infos:
        name = info.filename
        shown = name[:80]
        if name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name):
            raise ImportRefused(f"member {shown!r} has an absolute or Windows path; refused")
        parts = name.rstrip("/").split("/")
        if any(p in ("..", ".", "") for p in parts):
            raise ImportRefused(f"member {shown!r} points outside the record (.. or empty parts); refused")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ImportRefused(f"member {shown!r} is a symbolic link; links are refused")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type recorded (Windows zips)
            raise ImportRefused(f"member {shown!r} is not a plain file; refused")
        if info.flag_bits & 0x1:
            raise ImportRefused(f"member {shown!r} is encrypted; refused")
        if info.is_dir():
            if len(parts) != 1:
                raise ImportRefused(f"member {shown!r} is a nested folder; a record has none")
            tops.add(parts[0])
            continue
        if len(parts) > 2:
            raise ImportRefused(f"member {shown!r} is in a nested folder; a record has none")
        if len(parts) == 2:
            tops.add(parts[0])
        if not MEMBER_RE.match(parts[-1]):
            raise ImportRefused(f"member {shown!r} is not part of a run record, which holds only {ALLOWED}")
        if parts[-1] == "config.json" and info.file_size > runs.MAX_CONFIG_BYTES:
            raise ImportRefused(f"config.json is {info.file_size:,} bytes; a record's is at most "
                                f"{runs.MAX_CONFIG_BYTES:,}")
        if parts[-1] in members:
            raise ImportRefused(f"member {parts[-1]!r} appears twice")
        total += info.file_size
        if total > limit:
            raise ImportRefused("unpacked, " + _too_big(total, limit))
        members[parts[-1]] = info
    if len(tops) > 1 or (tops and any("/" not in i.filename for i in infos)):
        raise ImportRefused("the zip mixes folders; a record is one folder or loose files")
    if "config.json" not in members:
        raise ImportRefused("the zip has no config.json, so it is not a run record")
    return (tops.pop() if tops else ""), members


def _check_contents(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> dict[str, bytes]:
    from . import weights

    blobs: dict[str, bytes] = {}
    model_cfg = None
    for name, info in sorted(members.items(), key=lambda m: m[0] != "config.json"):  # the config first
        if name in WEIGHT_FILES:
            limit = 8 + weights.MAX_HEADER_BYTES + weights.expected_bytes(model_cfg)
            if info.file_size > limit:
                raise ImportRefused(f"{name} is {info.file_size:,} bytes; weights of the record's net take at "
                                    f"most {limit:,}")
        try:
            with zf.open(info) as f:
                data = f.read(info.file_size + 1)  # never more than the header promised
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, OSError, EOFError) as e:
            raise ImportRefused(f"member {name!r} cannot be unpacked: {e}") from None
        if len(data) != info.file_size:
            raise ImportRefused(f"member {name!r} is not the size its header says")
        if name == "config.json":
            try:
                model_cfg, _ = runs.check_config(json.loads(data))
            except (ValueError, RecursionError) as e:
                raise ImportRefused(f"config.json is not valid: {str(e)[:300]}") from None
        elif name in WEIGHT_FILES:
            try:
                weights.check(data, model_cfg, name)
            except weights.WeightsError as e:
                raise ImportRefused(f"{e}; refused") from None
        else:
            kind = name.split("-")[0].split(".")[0]
            if data[:4] != b"PAR1" or data[-4:] != b"PAR1":
                raise ImportRefused(f"{name} is not a parquet file (pickles and other formats are never read)")
            try:
                runs.read_parquet(pa.BufferReader(data), kind)
            except (ValueError, pa.ArrowException, OSError) as e:
                raise ImportRefused(f"{name} is not a valid {kind} table: {str(e)[:300]}") from None
        blobs[name] = data
    return blobs


def import_zip(file: Any, root: str | os.PathLike | None = None, limits: Any = None) -> runs.RunRecord:
    """Check the upload, then write it as a new record under `root`; ImportRefused says why not."""
    limit = (limits or LIMITS).max_upload_mb * 2**20
    data = _read_upload(file, limit)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ImportRefused("the file is not a zip archive") from None
    with zf:
        top, members = _check_names(zf.infolist(), limit)
        blobs = _check_contents(zf, members)
    meta = json.loads(blobs["config.json"])
    if meta["status"] == "running":  # its writer is on another machine, or gone: it will never finish here
        meta["status"] = "interrupted"
        meta["message"] = "imported while it was still running; it holds what was saved until then"
        blobs["config.json"] = runs.dump_config(meta)
    root = Path(root) if root is not None else runs.default_root()
    root.mkdir(parents=True, exist_ok=True)
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", top).strip("-.")[:80] or "imported"
    dest = root / base
    while dest.exists():
        dest = root / f"{base}-imported-{secrets.token_hex(3)}"
    tmp = root / f".import-{secrets.token_hex(6)}"
    tmp.mkdir()
    for name, blob in blobs.items():
        (tmp / name).write_bytes(blob)
    os.replace(tmp, dest)
    return runs.load_run(dest)
