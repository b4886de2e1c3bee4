"""Loading and saving VMamba state dicts with one-line, actionable errors.

Accepted files: ``{'model': sd}``, ``{'model_ema': sd}`` ('model' wins if both) or a bare
state dict. Loading never unpickles arbitrary objects: ``torch.load(weights_only=True)`` first,
then a restricted unpickler that keeps tensors and records what it skipped.
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from passes.files import atomic_target, input_file_problem
from passes.one_line import printable


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model (message is one line)."""


@dataclass
class LoadReport:
    path: str
    source_key: str | None            # 'model', 'model_ema' or None for a bare state dict
    skipped: list[str] = field(default_factory=list)   # non-tensor objects the restricted loader dropped
    upcast: bool = False               # float16 weights upcast to the model's dtype


def _listing(what: str, names: list[str], limit: int = 5) -> str:
    shown = ", ".join(printable(name) for name in names[:limit])   # keys of a crafted file may hold anything
    more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return f"{what} {len(names)} key{'s' if len(names) != 1 else ''}: {shown}{more}"


# ---------------------------------------------------------------- restricted unpickling
class _Skipped:
    """Base of the stand-ins for any global the restricted unpickler refuses to import."""

    skipped_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass   # drop the object's state: nothing of it is executed or kept

    def __repr__(self):
        return f"<skipped {self.skipped_name}>"


def _skipped_type(name: str) -> type:
    # pickle's NEWOBJ needs a real class, so each refused global gets an inert subclass
    return type("Skipped", (_Skipped,), {"skipped_name": name})


def _restricted_load(path: str) -> object:
    """Unpickle a torch zip checkpoint allowing only tensor-rebuilding globals."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path}: not a checkpoint (neither a torch zip archive nor loadable by torch.load)") from None
    with zf:
        names = zf.namelist()
        pkl_names = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl_names:
            raise CheckpointError(f"{path}: not a checkpoint (zip archive without data.pkl)")
        root = pkl_names[0][: -len("data.pkl")]
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
            ("torch._utils", "_rebuild_tensor"), ("collections", "OrderedDict"),
            ("torch", "Size"),
        }
        storages: dict[str, torch.UntypedStorage] = {}
        stored: dict[str, int] = {}   # bytes of each storage in the archive

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) in allowed:
                    return super().find_class(module, name)
                if module == "torch" and name.endswith("Storage"):
                    return getattr(torch, name)
                return _skipped_type(f"{module}.{name}")

            def persistent_load(self, pid):
                # torch writes ('storage', storage type, key, location, numel); anything else is crafted.
                if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[2], str)):
                    raise CheckpointError(f"{path}: not a checkpoint (bad persistent id {str(pid)[:60]})")
                typename, storage_type, key, location, numel = pid
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    dtype = storage_type.dtype if hasattr(storage_type, "dtype") else torch.float32
                if key not in storages:
                    member = f"{root}data/{key}"
                    if member not in names:
                        raise CheckpointError(f"{path}: not a checkpoint (storage {key[:60]} is missing from the archive)")
                    raw = zf.read(member)
                    storages[key] = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
                    stored[key] = len(raw)
                return torch.storage.TypedStorage(wrap_storage=storages[key], dtype=dtype, _internal=True)

        try:
            loaded = Unpickler(io.BytesIO(zf.read(pkl_names[0]))).load()
        except CheckpointError:
            raise
        except Exception as exc:   # truncated or crafted pickle, corrupt member, tensors outside their storage
            raise CheckpointError(f"{path}: not a checkpoint (unpickling failed: {_first_line(exc)})") from None
        # A storage read here is resizable: a tensor set past its end grows it with uninitialised memory where
        # torch.load's own storages refuse ("Trying to resize storage that is not resizable").
        grown = [key for key, storage in storages.items() if storage.nbytes() != stored[key]]
        if grown:
            raise CheckpointError(f"{path}: not a checkpoint (a tensor reaches past the end of storage {grown[0][:60]})")
        return loaded


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__


def _weights_only_reason(exc: pickle.UnpicklingError) -> str:
    """torch wraps the unpickler's error in a paragraph of advice; keep the error itself."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:120] if lines else type(exc).__name__


def _strip_skipped(obj, path: str, skipped: list[str]):
    if isinstance(obj, _Skipped) or (isinstance(obj, type) and issubclass(obj, _Skipped)):
        skipped.append(f"{path or '<root>'} ({obj.skipped_name})")
        return None
    if isinstance(obj, dict):
        out = OrderedDict()
        for k, v in obj.items():
            v2 = _strip_skipped(v, f"{path}.{k}" if path else str(k), skipped)
            if v2 is not None:
                out[k] = v2
        return out
    return obj


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The state dict inside a checkpoint file, and where it came from."""
    path = str(path)
    if not os.path.isfile(path):   # a folder, a named pipe, a device was 'X: no such file' (adv20)
        raise CheckpointError(input_file_problem(path, "checkpoint") if os.path.lexists(path)
                              else f"{path}: no such file")
    skipped: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # e.g. "Detected pickle protocol 4"
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Only a global that weights_only refuses (a config object, an optimizer class) is worth the
        # restricted loader; any other failure (a truncated or crafted pickle) is the file's fault.
        if "Unsupported global" not in str(exc):
            reason = _weights_only_reason(exc)
            raise CheckpointError(f"{path}: not a checkpoint ({reason})") from None
        obj = _strip_skipped(_restricted_load(path), "", skipped)
    except CheckpointError:
        raise
    except Exception as exc:   # random bytes, text, truncated zip ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a checkpoint (torch.load failed: {type(exc).__name__}: {first[:120]})") from None

    source = None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        sd, source = obj["model"], "model"
    elif isinstance(obj, dict) and isinstance(obj.get("model_ema"), dict):
        sd, source = obj["model_ema"], "model_ema"
    else:
        sd = obj
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, expected a state dict "
                              f"or a dict with 'model'/'model_ema')")
    bad = [str(k) for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict ({_listing('non-tensor entries in', bad)})")
    return sd, LoadReport(path, source, skipped)


def check_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], path: str = "state dict") -> None:
    """Raise CheckpointError listing missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = []
    for k, v in sd.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            # a 1x1 conv weight stored 4-D fits a 2-D Linear2d weight (upstream accepts both)
            if v.dim() == 4 and tuple(v.shape[2:]) == (1, 1) and tuple(v.shape[:2]) == tuple(own[k].shape):
                continue
            mismatched.append(f"{k} {list(v.shape)} vs model {list(own[k].shape)}")
    parts = []
    if missing:
        parts.append(_listing("missing", missing))
    if unexpected:
        parts.append(_listing("unexpected", unexpected))
    if mismatched:
        parts.append(f"shape mismatch in {len(mismatched)} key{'s' if len(mismatched) != 1 else ''}: "
                     + ", ".join(mismatched[:3]) + (f", ... (+{len(mismatched) - 3} more)" if len(mismatched) > 3 else ""))
    if parts:
        raise CheckpointError(f"{path}: does not fit the model: " + "; ".join(parts))


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load weights into ``model`` strictly (float16 files are upcast); returns a LoadReport."""
    sd, report = read_checkpoint(path)
    check_state_dict(model, sd, str(path))
    own = model.state_dict()
    converted = {}
    for k, v in sd.items():
        if v.is_floating_point() and v.dtype != own[k].dtype:
            report.upcast = True
            v = v.to(own[k].dtype)
        converted[k] = v
    model.load_state_dict(converted, strict=True)
    return report


def save_checkpoint(model: nn.Module | dict, path: str | os.PathLike, half: bool = False, **meta) -> None:
    """Write ``{'model': sd, **meta}`` atomically (temp file in the same folder, then os.replace)."""
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    sd = OrderedDict((k, (v.half() if half and v.is_floating_point() else v).detach().clone().contiguous())
                     for k, v in sd.items())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp, open(tmp, "wb") as f:
        torch.save({"model": sd, **meta}, f)
