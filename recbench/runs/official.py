"""Official pre-trained checkpoints (UniSRec, VQ-Rec): read without running them, map, load.

The authors' checkpoints (``UniSRec-FHCKM-300.pth``, ``VQRec-FHCKM-300.pth``,
``VQRec-FHCKM-300-20230315.pth``) were written by RecBole's ``PretrainTrainer.save_pretrained_model``:
``torch.save({"config": <recbole Config>, "epoch": ..., "state_dict": model.state_dict(),
"optimizer": ..., "other_parameter": ...})``. The Config is an arbitrary pickled Python object, so
``torch.load(weights_only=True)`` refuses the file and ``weights_only=False`` (or ``pickle.load``)
would run whatever the pickle names. Here the file is read by :class:`RestrictedUnpickler`:

- the tensor rebuild functions and storage types torch's pickle names are served by local,
  argument-checking functions (never torch's own), and storages come from the zip's ``data/N``
  entries through ``persistent_load``, checked against their declared size;
- plain containers (dict, list, tuple, set, ``collections.OrderedDict``) load as themselves;
- every other global becomes an inert :class:`Placeholder` class that records its name: calling it,
  ``__new__``, ``__setstate__``, ``append``/``__setitem__`` only store their arguments. So an object
  whose ``__reduce__`` names ``os.system`` loads as a placeholder recording that name and its
  arguments, and nothing runs. Every placeholder is reported with where it sat in the file.

The layout of a torch zip file (``torch/serialization.py``): ``<archive>/data.pkl`` is the pickle,
``<archive>/data/<key>`` the raw bytes of storage ``key`` (``numel * element size`` bytes, in the
byte order of ``<archive>/byteorder``, little if absent). The pre-1.6 non-zip format is refused
with a message saying how to convert it.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recbench.errors import RecbenchError


class CheckpointError(RecbenchError):
    """A checkpoint that cannot be read or does not fit the model (names the file or the parameter)."""


# --- placeholders ------------------------------------------------------------------------------
class Placeholder:
    """An object of a class (or the result of a function) that was not loaded: only recorded.

    Subclasses are made per global by :meth:`RestrictedUnpickler.find_class`; ``global_name`` is the
    ``module.qualname`` the pickle named. Nothing here calls anything it was given.
    """

    global_name = "?"
    __slots__ = ("args", "kwargs", "state", "items")

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args): __new__ stored them
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __reduce__(self) -> Any:
        raise TypeError(f"a placeholder of {self.global_name} cannot be pickled again")

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(list(items) if isinstance(items, (list, tuple)) else [items])

    def add(self, item: Any) -> None:
        self.items.append(item)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<not loaded: {self.global_name}>"

    def children(self) -> Iterator[tuple[str, Any]]:
        """What the pickle gave this object, to look for further placeholders in."""
        for number, arg in enumerate(self.args):
            yield f"({number})", arg
        for key, value in self.kwargs.items():
            yield f"({key}=)", value
        if self.state is not None:
            yield ".__state__", self.state
        for number, item in enumerate(self.items):
            yield f".__items__[{number}]", item


def _placeholder_class(module: str, name: str) -> type[Placeholder]:
    qualified = f"{module}.{name}"
    return type(f"NotLoaded[{qualified}]", (Placeholder,), {"global_name": qualified, "__slots__": ()})


# --- storages and tensors ----------------------------------------------------------------------
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
_DTYPES = {name: dtype for name in dir(torch) if isinstance(dtype := getattr(torch, name, None), torch.dtype)}


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: torch.dtype


class _Storage:
    """A loaded storage: a flat tensor; only the local rebuild functions accept it."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("the checkpoint tries to change a storage after loading it")


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise pickle.UnpicklingError(f"tensor {what} must be non-negative integers, got {value!r}"[:200])
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``,
    checked: a view inside the storage, copied out; no hooks, no metadata, no gradient."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor's storage is not one of the checkpoint's data entries")
    size, stride = _ints(size, "sizes"), _ints(stride, "strides")
    if type(offset) is not int or offset < 0 or len(size) != len(stride):
        raise pickle.UnpicklingError("a tensor's offset, sizes or strides are malformed")
    numel = storage.flat.numel()
    count = 1
    for s in size:
        count *= s
    if count > numel:
        raise pickle.UnpicklingError(
            f"a tensor of {count} elements on a storage of {numel}: expanded tensors are refused"
        )
    last = offset + sum((s - 1) * st for s, st in zip(size, stride)) if all(size) else offset - 1
    if (all(size) and last >= numel) or offset > numel:
        raise pickle.UnpicklingError(f"a tensor reaches past its storage ({last + 1} > {numel} elements)")
    return torch.as_strided(storage.flat, size, stride, offset).clone()


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, dtype: Any,
                       *rest: Any) -> torch.Tensor:  # fmt: skip
    tensor = _rebuild_tensor(storage, offset, size, stride)
    if not isinstance(dtype, torch.dtype) or dtype != tensor.dtype:
        raise pickle.UnpicklingError(f"a tensor's dtype {dtype!r} differs from its storage's {tensor.dtype}")
    return tensor


def _rebuild_parameter(data: Any, *rest: Any) -> torch.Tensor:
    """A saved ``nn.Parameter`` loads as its plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter's data is not a tensor")
    return data


def _rebuild_from_type_v2(func: Any, kind: Any, args: Any, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2``: only for plain tensors and parameters, without state."""
    if func not in (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("a tensor subclass is rebuilt by an unknown function")
    if kind is not _TENSOR_TYPE or state:
        raise pickle.UnpicklingError("tensor subclasses and tensor attributes are not loaded")
    return func(*args)


_TENSOR_TYPE = _StorageType("Tensor", torch.float32)  # stands for torch.Tensor / torch.nn.Parameter as a type


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Protocol-2 pickles write ``bytes`` as ``_codecs.encode(str, "latin1")``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only read for bytes (a str and latin1)")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocols 0 and 1): an instance of a placeholder class, nothing else."""
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls.__new__(cls, *(() if state is None else (state,)))
    raise pickle.UnpicklingError("copyreg._reconstructor is read only for classes that are not loaded")


_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TENSOR_TYPE,
    ("torch._tensor", "Tensor"): _TENSOR_TYPE,
    ("torch.nn.parameter", "Parameter"): _TENSOR_TYPE,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
}
_RENAMED_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # Python 2 names of protocol-2 pickles


class RestrictedUnpickler(pickle._Unpickler):  # the Python implementation: its dispatch table can be narrowed
    """Unpickle tensors and plain containers; every other global becomes a :class:`Placeholder` class.

    ``BUILD`` (``__setstate__``) is applied only to placeholders (and ignored on ``OrderedDict``,
    whose state is torch's ``_metadata``); on anything else, e.g. a tensor, it is refused.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedIOBase, load_storage: Callable[[str, torch.dtype, int], torch.Tensor]):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage
        self._storages: dict[str, _Storage] = {}
        self._placeholders: dict[tuple[str, str], type[Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _RENAMED_MODULES.get(module, module)
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if (module, name) not in self._placeholders:
            self._placeholders[(module, name)] = _placeholder_class(module, name)
        return self._placeholders[(module, name)]

    def persistent_load(self, saved_id: Any) -> _Storage:
        if not isinstance(saved_id, tuple) or len(saved_id) != 5 or saved_id[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r}"[:200])
        _, kind, key, _location, numel = saved_id
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage reference {saved_id!r}"[:200])
        if key not in self._storages:
            self._storages[key] = _Storage(self._load_storage(key, kind.dtype, numel))
        storage = self._storages[key]
        if storage.flat.dtype != kind.dtype or storage.flat.numel() != numel:
            raise pickle.UnpicklingError(f"storage {key} is referenced with two different types or sizes")
        return storage

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, Placeholder):
            target.__setstate__(state)
        elif type(target) is not collections.OrderedDict:
            raise pickle.UnpicklingError(f"the checkpoint sets the state of a {type(target).__name__}: refused")

    dispatch[pickle.BUILD[0]] = load_build


# --- reading a file ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SkippedObject:
    """A pickled object that was not loaded: its class (or function) and where it sat."""

    name: str
    where: str

    def __str__(self) -> str:
        return f"{self.name} at {self.where}"


@dataclass
class Checkpoint:
    """What a checkpoint file gave: its tensors by name, and what was skipped."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    skipped: list[SkippedObject] = field(default_factory=list)
    epoch: int | None = None


LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _zip_pickle(path: Path, archive: zipfile.ZipFile) -> tuple[bytes, Callable[[str, torch.dtype, int], torch.Tensor]]:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{path} is a zip file but not a torch checkpoint (no <archive>/data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    order = archive.read(prefix + "byteorder").decode("ascii", "replace") if prefix + "byteorder" in names else "little"
    if order not in ("little", "big"):
        raise CheckpointError(f"{path}: unknown byte order {order!r}")

    def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        if not re.fullmatch(r"[A-Za-z0-9_.]+", key) or f"{prefix}data/{key}" not in names:
            raise pickle.UnpicklingError(f"storage {key!r} has no data entry in the file")
        size = torch.empty((), dtype=dtype).element_size()
        declared = archive.getinfo(f"{prefix}data/{key}").file_size  # checked before anything is inflated
        raw = bytearray(archive.read(f"{prefix}data/{key}")) if declared == numel * size else b""
        if len(raw) != numel * size:
            raise pickle.UnpicklingError(f"storage {key} holds {len(raw) or declared} bytes, {numel * size} declared")
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if order != sys.byteorder and size > 1:
            flat = flat.view(torch.uint8).view(-1, size).flip(1).contiguous().view(dtype).view(-1)
        return flat

    return archive.read(pickles[0]), load_storage


def read_checkpoint(path: Path | str) -> Checkpoint:
    """Read a torch checkpoint without running anything in it (see the module docstring).

    The state dict is the file's ``state_dict`` entry (a RecBole checkpoint) or the file itself when
    it maps names to tensors. Errors (not a checkpoint, truncated, malformed pickle) are a
    :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(LEGACY_MAGIC):
        raise CheckpointError(
            f"{path} is in torch's legacy (pre-1.6, non-zip) format, which is not read here; re-save it in the zip "
            "format in an environment you trust"
        )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        hint = "truncated or damaged zip" if data[:4] == b"PK\x03\x04" else "not a torch checkpoint"
        raise CheckpointError(f"{path} cannot be read: {hint} (torch checkpoints are zip files)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pickled, load_storage = _zip_pickle(path, archive)
            root = RestrictedUnpickler(io.BytesIO(pickled), load_storage).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError) as err:
        raise CheckpointError(f"{path} is damaged or truncated ({type(err).__name__}: {str(err)[:160]})") from None
    except (pickle.UnpicklingError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: malformed checkpoint, refused ({type(err).__name__}: {str(err)[:160]})"
        ) from None
    skipped = list(find_placeholders(root))
    if isinstance(root, dict) and "state_dict" in root:
        state, where = root["state_dict"], "['state_dict']"
    else:
        state, where = root, ""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state dict (expected a mapping of parameter names to tensors)")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors under {where or 'its top level'}")
    epoch = root.get("epoch") if isinstance(root, dict) and type(root.get("epoch")) is int else None
    return Checkpoint(path=path, sha256=digest, state_dict=tensors, skipped=skipped, epoch=epoch)


def find_placeholders(root: Any, where: str = "") -> Iterator[SkippedObject]:
    """Every placeholder (and placeholder class) in a loaded structure, with its path; each object once."""
    seen: set[int] = set()
    todo: list[tuple[str, Any]] = [(where, root)]
    while todo:
        path, value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, type) and issubclass(value, Placeholder):
            yield SkippedObject(value.global_name, path or "<top>")
        elif isinstance(value, Placeholder):
            yield SkippedObject(value.global_name, path or "<top>")
            todo.extend((path + step, child) for step, child in reversed(list(value.children())))
        elif isinstance(value, dict):
            todo.extend((f"{path}[{key!r}]", child) for key, child in reversed(list(value.items())))
            todo.extend((f"{path}.<key>", key) for key in value if isinstance(key, Placeholder))
        elif isinstance(value, (list, tuple, set, frozenset)):
            todo.extend((f"{path}[{number}]", child) for number, child in reversed(list(enumerate(value))))


# --- mapping onto a method ---------------------------------------------------------------------
OFFICIAL_PREFIX = "official:"


def resolve_init(init: str | Path) -> Path:
    """``--init`` -> a file: a path, or ``official:NAME`` = ``$RECBENCH_HOME/official/NAME`` (``.pth`` optional)."""
    text = str(init)
    if not text.startswith(OFFICIAL_PREFIX):
        path = Path(text).expanduser()
        if not path.is_file():
            raise CheckpointError(f"--init {text}: no such file")
        return path
    from recbench.data.catalog import recbench_home
    from recbench.names import InvalidNameError, check_name

    name = text[len(OFFICIAL_PREFIX) :]
    try:
        check_name("official checkpoint", name)
    except InvalidNameError as err:
        raise CheckpointError(f"--init {text}: {err}") from None
    folder = recbench_home() / "official"
    for candidate in (folder / name, folder / f"{name}.pth"):
        if candidate.is_file():
            return candidate
    present = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
    listing = f" (it holds: {', '.join(present)})" if present else " (it holds no files)"
    raise CheckpointError(
        f"--init {text}: no file {name} or {name}.pth in {folder}{listing}; put the authors' checkpoint there"
    )


@dataclass
class InitReport:
    """What loading an official checkpoint into a model did, as the run records it (``config.json`` ``init``)."""

    source: str
    sha256: str
    loaded: list[str]
    """recbench parameters that took the checkpoint's values."""
    not_loaded: list[str]
    """recbench parameters left at their initial value."""
    unmapped: dict[str, str]
    """Official tensors not loaded, with the reason."""
    skipped_objects: list[SkippedObject]
    """Pickled non-tensor objects that were not loaded (e.g. RecBole's Config)."""

    def record(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "loaded": len(self.loaded),
            "not_loaded": self.not_loaded,
            "unmapped": self.unmapped,
            "skipped_objects": [{"name": s.name, "where": s.where} for s in self.skipped_objects],
        }

    def warnings(self) -> list[str]:
        lines = [f"WARNING: {self.source}: official '{key}' not loaded ({why})" for key, why in self.unmapped.items()]
        lines += [f"WARNING: {self.source}: '{name}' keeps its initial value" for name in self.not_loaded]
        lines += [f"WARNING: {self.source}: pickled {s} not loaded (skipped)" for s in self.skipped_objects]
        return lines


def convert_official(method: Any, checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The checkpoint's tensors renamed (and stacked) into the method's state-dict names, and the
    official tensors left out with the reason. Shapes are checked against the built ``method``."""
    name = getattr(method, "name", type(method).__name__)
    mapping = type(method).official_parameter_map(method.config)
    if mapping is None:
        raise CheckpointError(f"method '{name}' has no official checkpoint mapping")
    own = method.state_dict()
    state = checkpoint.state_dict
    pieces: dict[str, dict[int | None, torch.Tensor]] = {}
    for entry in mapping.parameters:
        if entry.target not in own:
            raise CheckpointError(f"{name}: the official map names '{entry.target}', which the model does not have")
        if entry.source not in state:
            continue  # reported below: its target is not (fully) loaded
        tensor = state[entry.source].t() if entry.transpose else state[entry.source]
        expected = own[entry.target].shape if entry.row is None else own[entry.target].shape[1:]
        if entry.row is not None and entry.row >= own[entry.target].shape[0]:
            expected = None
        if expected is None or tensor.shape != expected:
            whole = f"{entry.target}[{entry.row}]" if entry.row is not None else entry.target
            shown = "none (the model has fewer rows)" if expected is None else tuple(expected)
            hint = mapping.shape_hints.get(entry.target)
            raise CheckpointError(
                f"{checkpoint.path}: official '{entry.source}' has shape {tuple(state[entry.source].shape)}"
                f"{' (transposed: ' + str(tuple(tensor.shape)) + ')' if entry.transpose else ''}, recbench's '{whole}' "
                f"has shape {shown}{'; ' + hint if hint else ''}"
            )
        pieces.setdefault(entry.target, {})[entry.row] = tensor
    converted: dict[str, torch.Tensor] = {}
    rows_needed: dict[str, set[int | None]] = {}
    for entry in mapping.parameters:
        rows_needed.setdefault(entry.target, set()).add(entry.row)
    partial: set[str] = set()
    for target, parts in pieces.items():
        if set(parts) != rows_needed[target]:
            partial.add(target)  # a stacked tensor with rows missing from the checkpoint stays as it is
            continue
        if None in parts:
            converted[target] = parts[None].to(own[target].dtype).clone()
        else:
            whole = own[target].clone()
            for row, tensor in parts.items():
                whole[row] = tensor.to(whole.dtype)
            converted[target] = whole
    mapped_sources = {entry.source for entry in mapping.parameters}
    unmapped = {}
    for key in sorted(set(state) - mapped_sources):
        reason = next((why for pattern, why in mapping.ignored.items() if re.fullmatch(pattern, key)), None)
        unmapped[key] = reason or f"no {name} parameter corresponds to it"
    for entry in mapping.parameters:
        if entry.source not in state:
            unmapped[entry.source] = "expected but absent from the checkpoint"
        elif entry.target in partial:
            unmapped[entry.source] = f"other rows of '{entry.target}' are absent from the checkpoint"
    if not converted:
        raise CheckpointError(
            f"{checkpoint.path}: none of its {len(state)} tensors maps onto {name} "
            f"(is it an official {name} checkpoint? it holds e.g. {', '.join(sorted(state)[:3])})"
        )
    return converted, unmapped


def load_official(method: Any, checkpoint: Checkpoint, source: str) -> InitReport:
    """Load an official checkpoint into a built method through :meth:`Method.load_pretrained` (the same
    hand-over as recbench's own pre-training: it freezes what the method's fine-tuning freezes)."""
    converted, unmapped = convert_official(method, checkpoint)
    method.load_pretrained(converted)
    parameters = [name for name, _ in method.named_parameters()]
    return InitReport(
        source=source,
        sha256=checkpoint.sha256,
        loaded=[name for name in parameters if name in converted],
        not_loaded=[name for name in parameters if name not in converted],
        unmapped=unmapped,
        skipped_objects=checkpoint.skipped,
    )
