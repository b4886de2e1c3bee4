"""Reading and writing models, and moving between ``onnx.ModelProto`` and ``gs.Graph``.

Everything that touches the file system for a model goes through here, so that bad input
gives one clear line (``InputError``) and an output file is never left half written.
"""
from __future__ import annotations

import contextlib
import errno
import filecmp
import hashlib
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError, EncodeError
from onnx.external_data_helper import set_external_data, uses_external_data

from passes.files import (FOLDER_CHANGED, DestinationError, FileChangedError, check_destination, checked_file,
                          interrupts_held, is_same_file, normal_file_mode, open_checked, open_model_file,
                          open_regular_file)
from passes.interrupts import raise_if_interrupted
from passes.one_line import ASCII_INTEGER, one_line, printable
from patterns.graph_query import toposort


class GraphIOError(Exception):
    """A model file could not be read or written; the message is one line for the user."""


class InputError(GraphIOError):
    """The input is missing, not an ONNX model, truncated, or its external data is missing or unsafe."""


class OutputError(GraphIOError):
    """The output cannot be written (unwritable place, not a regular file, or a file this run reads)."""


@dataclass
class LoadedModel:
    model: onnx.ModelProto
    path: Path
    # True when the file kept its weights in external data files; outputs keep that form.
    used_external_data: bool
    # The external data files read (resolved paths): a run never writes over them.
    data_files: list[Path] = field(default_factory=list)
    # (device, inode) of the folder the model was read from: the external data and the reference beside it are read
    # from that folder only, whatever its path names by then (files.open_checked(folder=))
    folder: tuple[int, int] | None = None


def read_model(path: str | os.PathLike) -> LoadedModel:
    """Load a model with its external data, turning every failure into a one-line InputError.

    External data is read for every tensor of every graph, If/Loop/Scan bodies and functions
    included, from the model's folder only: a location that is absolute, climbs out with ``..``
    or leads out through a symbolic link is refused, so a hostile model cannot read other files.
    The loaded model refers to no file any more: nothing is left for ONNX Runtime to resolve
    against the working directory.
    """
    path = Path(path)
    shown = printable(path)
    if not path.exists():
        raise InputError(f"input file not found: {shown}")
    if path.is_dir():
        raise InputError(f"input is a directory, not an ONNX file: {shown}")
    if not path.is_file():
        raise InputError(f"input is not a regular file: {shown}")
    # Structure first: we need to see whether tensors live outside the file before
    # onnx rewrites them to inline data while loading. Opened through its folder, whose identity the reads of
    # external data check (the folder renamed and a link put in its place after this read: adv23)
    try:
        handle, folder = open_model_file(path)
    except OSError as error:
        raise _unreadable(error, shown) from None
    model = read_structure(path, handle)
    if not model.opset_import:
        # Required by every IR version we read; a file cut right after its graph parses without it.
        raise InputError(f"incomplete ONNX model (no opset_import; truncated?): {shown}")

    external = [tensor for tensor in all_tensors(model) if uses_external_data(tensor)]
    data_files = _load_external_data(external, path, model.ByteSize(), folder) if external else []
    return LoadedModel(model=model, path=path, used_external_data=bool(external), data_files=data_files, folder=folder)


def _unreadable(error: OSError, shown: str) -> InputError:
    reason = printable(error.strerror or error)
    return InputError(f"input {shown} is {reason}" if error.errno == errno.EINVAL
                      else f"input {shown} cannot be read ({reason})")


def read_structure(path: str | os.PathLike, handle=None) -> onnx.ModelProto:
    """The model in a file, its external data not read (what read_model reads first, and all that a tool that
    only looks at the graph needs: tools.nodecount, tools.diffview); a file that does not parse, or parses to
    no model, is a one-line InputError. The caller checks first that ``path`` is a regular file; ``handle``: the
    file already opened (``files.open_model_file``), read and closed here."""
    shown = printable(path)
    if handle is None:
        try:   # opened once and read from what was opened: a named pipe put in its place after the check is refused
            handle = open_regular_file(path)
        except OSError as error:
            raise _unreadable(error, shown) from None
    try:
        with handle:
            model = onnx.load(handle, format="protobuf", load_external_data=False)
    except DecodeError as error:
        raise InputError(f"not an ONNX file, or truncated: {shown} ({one_line(error, limit=300)})") from None
    except Exception as error:  # onnx wraps protobuf errors differently across versions
        raise InputError(f"cannot read {shown} as ONNX: {one_line(error, limit=300)}") from None
    if not model.HasField("graph") or (model.ir_version == 0 and not model.opset_import):
        raise InputError(f"not an ONNX model (no graph or version found): {shown}")
    return model


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Like ``read_model`` but returns only the ModelProto."""
    return read_model(path).model


def model_and_data_files(path: str | os.PathLike, role: str = "model") -> list[tuple[str, Path]]:
    """(role, path) of a model file and of each external data file it names, for a tool's
    ``check_not_read``: a tool that reads a model must not write over its weights, whether it reads them
    or not (``tools.tpu_calibration synthetic m.onnx -o m.data`` replaced the model's weights). Only the
    structure is read, and only from a regular file; a file that does not parse names no data file
    (the tool says what is wrong with it)."""
    from passes.files import input_file_problem

    files = [(role, Path(path))]
    if input_file_problem(path) is not None:
        return files
    try:
        model = onnx.load(os.fspath(path), format="protobuf", load_external_data=False)
    except Exception:
        return files
    return files + [(f"external data file of the {role}", file) for file in external_data_files(path, model)]


def location_parts(location: str) -> list[str]:
    """The path components of an external data ``location`` as the model is read (``_external_location``): a
    backslash separates them as a slash does (a model written on Windows says ``sub\\w.bin``). Every list of the
    files a model reads goes through here, so that a check that nothing read is written over names the file that
    is read (adv24: ``sub\\w.bin`` was read as sub/w.bin but listed as a file named ``sub\\w.bin``, so
    ``tools.tpu_calibration synthetic m.onnx -o sub/w.bin`` wrote over the model's weights)."""
    return location.replace("\\", "/").split("/")


def external_data_files(path: str | os.PathLike, model: onnx.ModelProto) -> list[Path]:
    """The external data files that ``model`` (the structure of the file at ``path``) names, each once, as paths
    beside ``path`` (``location_parts``) and, where it differs, as the location says it (ONNX Runtime on Linux reads
    ``sub\\w.bin`` as one name; an absolute location names its own file), for the checks that a tool writes over
    none of them. Locations no reader takes (empty, with a NUL) are left out."""
    locations = {entry.value for tensor in all_tensors(model) if uses_external_data(tensor)
                 for entry in tensor.external_data if entry.key == "location" and entry.value and "\x00" not in entry.value}
    files: list[Path] = []
    for location in sorted(locations):
        for file in (Path(path).parent.joinpath(*location_parts(location)), Path(path).parent / location):
            if file not in files:
                files.append(file)
    return files


def all_graphs(graph: onnx.GraphProto):
    """``graph`` and every graph nested in its nodes' attributes (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        yield from _attribute_graphs(node)


def _attribute_graphs(node: onnx.NodeProto):
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield from all_graphs(attribute.g)
        for subgraph in attribute.graphs:
            yield from all_graphs(subgraph)


def expanded_node_count(model: onnx.ModelProto, limit: int) -> int:
    """The model's nodes (subgraphs' included) with every call of a model-local function counted as
    the nodes of its body, expanded as ONNX Runtime inlines them; min(that, limit + 1). Functions
    calling each other twice, 20 deep, make a 2 KB model of a million nodes, whose inlining alone
    takes ONNX Runtime hours (model_check refuses them; verify and simplify count them so). Local
    functions must not call each other in a cycle (model_check)."""
    def own_nodes_and_calls(nodes) -> tuple[int, list]:
        own, calls = 0, []
        for graph_nodes in [nodes] + [list(g.node) for node in nodes for g in _attribute_graphs(node)]:
            for node in graph_nodes:
                if (node.domain, node.op_type) in bodies:
                    calls.append((node.domain, node.op_type))
                else:
                    own += 1
        return own, calls

    bodies = {(function.domain, function.name): function for function in model.functions}
    parts = {key: own_nodes_and_calls(list(function.node)) for key, function in bodies.items()}
    sizes: dict[tuple[str, str], int] = {}
    opened: set[tuple[str, str]] = set()
    for start in parts:   # callees first, without recursion (a chain of thousands of functions is valid)
        stack = [start]
        while stack:
            key = stack[-1]
            if key in sizes:
                stack.pop()
            elif key not in opened:   # its callees above it; it is summed when it is on top again
                opened.add(key)
                stack.extend(callee for callee in set(parts[key][1]) if callee not in sizes and callee not in opened)
            else:
                stack.pop()
                own, calls = parts[key]   # a callee opened and not summed is a cycle: counted as too many
                sizes[key] = min(own + sum(sizes.get(callee, limit + 1) for callee in calls), limit + 1)
    own, calls = own_nodes_and_calls(list(model.graph.node))
    return min(own + sum(sizes[callee] for callee in calls), limit + 1)


def _node_tensors(node: onnx.NodeProto):
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        for sparse in ([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []) + list(attribute.sparse_tensors):
            yield sparse.values
            yield sparse.indices


def all_tensors(model: onnx.ModelProto):
    """Every TensorProto of the model: initializers (sparse too) and tensor attributes, in every
    graph and subgraph and in the model's functions."""
    graphs = list(all_graphs(model.graph))
    for function in model.functions:
        for node in function.node:
            graphs.extend(_attribute_graphs(node))
    for graph in graphs:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from _node_tensors(node)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _external_location(folder: Path, location: str, tensor_name: str) -> tuple[str, Path, os.stat_result | None]:
    """The file a tensor's ``location`` names, if it stays inside ``folder`` (links resolved): the folder's real path,
    the file's, and what the file is now (``files.checked_file``), for ``files.open_checked`` to open that file."""
    shown = f"external data '{printable(location)}' of tensor '{printable(tensor_name)}'"
    if not location or "\x00" in location:
        raise InputError(f"{shown}: empty or invalid location")
    parts = location_parts(location)
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise InputError(f"{shown}: absolute locations are refused (data must sit in the model's folder)")
    if ".." in parts:
        raise InputError(f"{shown}: '..' leaves the model's folder; refused")
    base, resolved, status = checked_file(folder, os.path.join(os.path.realpath(folder), *parts))
    if os.path.commonpath([base, resolved]) != base:
        raise InputError(f"{shown}: leads out of the model's folder through a symbolic link; refused")
    return base, Path(resolved), status


def tensor_byte_size(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's declared dims and type take as raw data; None for strings and unknown types."""
    count = 1
    for dim in tensor.dims:
        count *= dim
    if tensor.data_type in FOUR_BIT_TYPES:
        return (count + 1) // 2
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:   # strings, unknown types: no fixed size
        return None


FOUR_BIT_TYPES = {getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, name)}


# Bytes of external data that tensors sharing a range may read again, all together: a tied weight
# read twice is a model's right, but 2,000 tensors naming one 1 MiB range of a 1 MiB file made a
# 44 KB model take 1.9 GB of memory and write a 600 MB output (20,000: the machine's memory).
MAX_REREAD_EXTERNAL_BYTES = 2**31


def _bytes_read_again(spans: dict[Path, list[tuple[int, int]]]) -> int:
    """How many of the bytes that the (offset, length) spans of each file name lie in an earlier span."""
    again = 0
    for file_spans in spans.values():
        end = 0   # spans sorted by offset: the earlier ones cover [their first offset, end) without a gap
        for offset, length in sorted(file_spans):
            again += max(0, min(end, offset + length) - offset)
            end = max(end, offset + length)
    return again


# Protobuf's limit on one serialized message: the model, its weights read in, is one (the checker, shape
# inference, the passes' checks and ONNX Runtime's bytes all serialize it).
MAX_MODEL_BYTES = 2**31 - 1


def serialized_model(model: onnx.ModelProto) -> tuple[bytes | None, int]:
    """The model serialized, and its size. protobuf's upb refuses to serialize past 2 GiB (EncodeError, adv19): then
    no bytes, and the sum of its main graph's initializers and nodes (which hold its subgraphs) and its functions, each
    measured alone, a few bytes short of the whole. (upb measures by serializing: measuring alone costs what this does,
    0.25-0.37 s on VMamba-T, so the bytes are handed on to the checks rather than serialized again.)"""
    try:
        data = model.SerializeToString()
        return data, len(data)
    except EncodeError:
        parts = [*model.graph.initializer, *model.graph.node, *model.functions]
        try:
            return None, sum(part.ByteSize() for part in parts)
        except EncodeError:   # one part past 2 GiB itself
            return None, MAX_MODEL_BYTES + 1


def over_protobuf_limit(what: str, size: int) -> str | None:
    """The refusal of a model of ``size`` bytes past MAX_MODEL_BYTES (``what`` says which model), or None."""
    if size <= MAX_MODEL_BYTES:
        return None
    return (f"{what} {size:,} bytes, over protobuf's limit of {MAX_MODEL_BYTES + 1:,} (2 GiB) on one model, which "
            "is how the compiler holds it; not supported")


def _load_external_data(tensors: list[onnx.TensorProto], model_path: Path, structure_bytes: int = 0,
                        model_folder: tuple[int, int] | None = None) -> list[Path]:
    """Read each tensor's bytes into the tensor (checking bounds and sizes, the bytes read more than once all
    together, and the whole model's size with them, before any is read); the files read."""
    folder = model_path.parent if str(model_path.parent) else Path(".")
    opened: dict[Path, tuple] = {}
    reads: list[tuple[onnx.TensorProto, object, int, int]] = []
    spans: dict[Path, list[tuple[int, int]]] = {}
    try:
        for tensor in tensors:
            info = {entry.key: entry.value for entry in tensor.external_data}
            name = printable(tensor.name)
            base, file_path, checked = _external_location(folder, info.get("location", ""), tensor.name)
            if file_path not in opened:
                try:
                    # the file checked, opened without following a link (a named pipe's open does not wait for
                    # a writer; refused below)
                    fd = open_checked(base, os.fspath(file_path), checked, model_folder)
                except FileChangedError as error:
                    if error.strerror == FOLDER_CHANGED:
                        raise InputError(f"external data '{printable(info.get('location'))}' of tensor '{name}': "
                                         f"{FOLDER_CHANGED} (renamed, or a symbolic link or another folder put in its "
                                         "place); refused") from None
                    raise InputError(f"external data '{printable(info.get('location'))}' of tensor '{name}' changed "
                                     "between its check and its read (a symbolic link or another file put in its "
                                     "place); refused") from None
                except OSError as error:
                    raise InputError(f"external data of {printable(model_path)} could not be read: "
                                     f"{printable(info.get('location'))}: {printable(error.strerror or error)}") from None
                status = os.fstat(fd)
                if not stat.S_ISREG(status.st_mode):
                    os.close(fd)
                    raise InputError(f"external data '{printable(info.get('location'))}' of tensor '{name}' "
                                     "is not a regular file; refused")
                opened[file_path] = (os.fdopen(fd, "rb"), status.st_size)
            handle, size = opened[file_path]
            # ASCII digits only (adv18): int() also takes '1_0', ' 0 ' and other scripts' digits, a number the text
            # does not show, where another reader of the file (ONNX Runtime's C++) would read other bytes or none
            written = {key: info[key] for key in ("offset", "length") if key in info}
            odd = next((key for key, text in written.items() if not ASCII_INTEGER.fullmatch(text)), None)
            if odd is not None:
                raise InputError(f"external data of tensor '{name}': {odd} '{printable(written[odd])}' is not an "
                                 "integer written in ASCII digits") from None
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else size - offset
            if offset < 0 or length < 0 or offset + length > size:
                raise InputError(f"external data of tensor '{name}': bytes {offset}..{offset + length} lie outside "
                                 f"'{printable(info.get('location'))}' ({size} bytes; truncated?)")
            expected = tensor_byte_size(tensor)
            if expected is not None and length != expected:
                raise InputError(f"external data of tensor '{name}' holds {length} bytes; its type and shape "
                                 f"need {expected}")
            reads.append((tensor, handle, offset, length, info.get("location")))
            spans.setdefault(file_path, []).append((offset, length))
        again = _bytes_read_again(spans)
        if again > MAX_REREAD_EXTERNAL_BYTES:
            raise InputError(f"external data of {printable(model_path)}: its tensors name the same bytes over and over "
                             f"({again:,} bytes read again, over the {MAX_REREAD_EXTERNAL_BYTES:,} allowed); refused")
        # adv18: past 2 GiB the model was read in whole (4.3 GB of memory), then 'internal error: EncodeError:
        # Failed to serialize proto' (exit 1) with --verify none, and a hint to use --verify none without it
        too_large = over_protobuf_limit(f"{printable(model_path)} with its external data read in would be",
                                        structure_bytes + sum(length for _, _, _, length, _ in reads))
        if too_large:
            raise InputError(too_large)
        for tensor, handle, offset, length, location in reads:
            handle.seek(offset)
            data = handle.read(length)
            if len(data) != length:   # cut since its size was read (adv18: was blamed on the tensor's dims)
                raise InputError(f"external data '{printable(location)}' of tensor '{printable(tensor.name)}' changed "
                                 f"while it was read: {len(data):,} of {length:,} bytes at offset {offset:,} "
                                 "(the file was cut meanwhile); refused")
            tensor.raw_data = data
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    finally:
        for handle, _ in opened.values():
            handle.close()
    return list(opened)


def check_output_path(output: str | os.PathLike, *, input_path: str | os.PathLike | None = None,
                      allow_overwrite_input: bool = False) -> Path:
    """Fail early (before minutes of work) if the output cannot be written: its folder is missing or
    takes no file, it exists and is not a regular file, or it is the input without
    ``allow_overwrite_input`` (with it, a symbolic link to the input). (Its weights file, with
    external data, is named by its content when written: a new name, never a file the run reads;
    see ``save_model_atomic``.)"""
    written = output   # as given: a trailing '/' is refused by check_destination, Path() drops it
    output = Path(output)
    if input_path is not None and is_same_file(output, input_path):
        if not allow_overwrite_input:
            raise OutputError(f"output {printable(output)} is the input file; pass --in-place to overwrite it")
        if output.is_symlink():
            # Replacing the link would leave the model it leads to as it was; writing through it is
            # what a planted link is for. Neither: the user names the file.
            raise OutputError(f"output {printable(output)} is a symbolic link to the input; --in-place never "
                              f"replaces nor writes through a link: give the file it leads to, "
                              f"{printable(os.path.realpath(output))}")
    try:
        check_destination(written)
    except DestinationError as error:
        raise OutputError(str(error)) from None
    return output


def _data_file_name(model_name: str, digest: str) -> str:
    return f"{model_name}.{digest[:16]}.data"


def _is_data_file_name(model_name: str, name: str) -> bool:
    """A name ``save_model_atomic`` gives the weights of ``model_name``: ``<name>.<16 hex>.data``."""
    return re.fullmatch(re.escape(model_name) + r"\.[0-9a-f]{16}\.data", name) is not None


def _data_files_of(path: Path) -> list[Path]:
    """The weights files of the model now at ``path`` that this writer named (``<name>.<hash>.data``
    beside it, regular files, not links): what replacing that model leaves unused. Nothing for a link
    (the model it leads to stays) or a file with hard links (a backup under another name still names
    its weights), a file too large to be a model with external data, or one that does not parse."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_nlink > 1 or path.stat().st_size > 256 << 20:
            return []
        old = onnx.load(str(path), format="protobuf", load_external_data=False)
    except Exception:
        return []
    found = []
    for tensor in all_tensors(old):
        if not uses_external_data(tensor):
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        if not _is_data_file_name(path.name, location):   # first: with_name refuses 'weights/w.bin' and ''
            continue
        candidate = path.with_name(location)
        if candidate not in found and stat.S_ISREG(os.lstat(candidate).st_mode if os.path.lexists(candidate) else 0):
            found.append(candidate)
    return found


@contextlib.contextmanager
def _folder_lock(directory: Path) -> Iterator[bool]:
    """An exclusive lock on ``directory`` between this project's writers (True), or False where the
    file system takes none: two runs writing one output must not remove each other's weights."""
    try:
        import fcntl
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except (ImportError, OSError):
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)   # releases the lock


# Tensors of at least this many bytes go to the weights file (onnx's default threshold).
_EXTERNAL_MIN_BYTES = 1024


def _stage_external(model: onnx.ModelProto, staging: Path, model_name: str) -> str | None:
    """Write ``model`` into ``staging`` with its initializers of 1 KiB or more (every graph's) in a
    file named by their content, that name already in the model: weights and model written once
    each. The name of the weights file (None when no tensor was large enough to go there)."""
    # Marked here, not by onnx's convert_model_to_external_data: that refuses a location that exists
    # relative to the working folder (a ./weights.data made every save fail).
    copy = onnx.ModelProto()
    copy.CopyFrom(model)   # the caller's model stays self-contained
    tensors = [tensor for graph in all_graphs(copy.graph) for tensor in graph.initializer
               if len(tensor.raw_data) >= _EXTERNAL_MIN_BYTES]
    if tensors:
        digest = hashlib.sha256()
        for tensor in tensors:
            digest.update(tensor.raw_data)
        data_name = _data_file_name(model_name, digest.hexdigest())
        # O_EXCL in our own mkdtemp folder; the weights readable like the model (not mkstemp's 0600)
        with open(os.open(staging / data_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, normal_file_mode()), "wb") as data:
            for tensor in tensors:
                offset = data.tell()
                data.write(tensor.raw_data)
                set_external_data(tensor, data_name, offset, len(tensor.raw_data))
                tensor.ClearField("raw_data")
    _write_protobuf(copy, staging / model_name)
    return data_name if tensors else None


def _write_protobuf(model: onnx.ModelProto, path: Path) -> None:
    """onnx.save_model's protobuf write, with a model past 2 GiB refused in words (ValueError, which
    save_model_atomic says as 'cannot write ...'): onnx.save_model raised protobuf's bare 'EncodeError: Failed to
    serialize proto' to a caller of PassManager(check=False) that wrote its graph (adv19's leftover, adv20). Only a
    failed write is measured: a model that serializes costs nothing more."""
    try:
        onnx.save_model(model, str(path), format="protobuf")
    except EncodeError:
        raise ValueError(over_protobuf_limit("the model is", max(serialized_model(model)[1], MAX_MODEL_BYTES + 1))) \
            from None


def _refuse_other_bytes_in_a_read_file(staged: Path, data_path: Path, read_files) -> None:
    """Anyone can compute the content-named weights file's name: a file the run reads may have been
    given it with other bytes (the input's weights at another offset). Never replaced; the same
    bytes are replaced by themselves."""
    if os.path.lexists(data_path) and any(is_same_file(data_path, read) for read in read_files) \
            and not filecmp.cmp(staged, data_path, shallow=False):
        raise OutputError(f"output data file {printable(data_path)} is a file this run reads, holding other "
                          "bytes; refusing to overwrite it")


def save_model_atomic(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool = False,
                      input_path: str | os.PathLike | None = None, allow_overwrite_input: bool = False,
                      keep_files: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``model`` so that ``path`` is either the complete new model or untouched.

    The model is written in a private temporary directory beside the target (``mkdtemp``: a
    unique name, mode 0700) and moved into place with ``os.replace`` (atomic on one file
    system). With ``external_data`` the weights go to ``<name>.<hash>.data`` beside the model,
    named by their content (the same model gives the same bytes) and moved in before the model
    that names them: a reader, an interrupt or a failure at any point sees the old model with
    its own weights or the new one with its own, never a mix. The weights file of the model
    replaced (one this function named) is removed afterwards, except one of ``keep_files``
    (what the run read).
    """
    path = check_output_path(path, input_path=input_path, allow_overwrite_input=allow_overwrite_input)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=directory))
    except OSError as error:
        raise OutputError(f"cannot write in {printable(directory)}: {one_line(error, limit=300)}") from None
    try:
        staged_model = staging / path.name
        if external_data:
            data_name = _stage_external(model, staging, path.name)
        else:
            data_name = None
            _write_protobuf(model, staged_model)
        raise_if_interrupted()   # one whose exception Python dropped (passes.interrupts)
        with _folder_lock(directory) as locked:
            replaced_data = _data_files_of(path) if locked else []   # read before the model is replaced
            placed_data = None
            try:
                if data_name is not None:
                    data_path = check_destination(directory / data_name, "output data file")
                    _refuse_other_bytes_in_a_read_file(staging / data_name, data_path, keep_files)
                    placed_data = None if os.path.lexists(data_path) else data_path   # else: the same bytes
                    os.replace(staging / data_name, data_path)
                os.replace(staged_model, path)
            except BaseException:
                if placed_data is not None:   # weights no model names: not left behind
                    with contextlib.suppress(OSError):
                        os.unlink(placed_data)
                raise
            for old in replaced_data:
                if old.name != data_name and not any(is_same_file(old, kept) for kept in keep_files):
                    with contextlib.suppress(OSError):
                        os.unlink(old)
    except (OSError, ValueError) as error:
        raise OutputError(f"cannot write {printable(path)}: {one_line(error, limit=300)}") from None
    finally:
        with interrupts_held():   # a second Ctrl-C while cleaning up left the staging folder (adv18)
            shutil.rmtree(staging, ignore_errors=True)
    return path


# --- ModelProto <-> gs.Graph -------------------------------------------------------------

@dataclass
class ModelMeta:
    """Model-level fields that onnx-graphsurgeon does not carry through a graph."""

    ir_version: int = 0
    opset_import: list[tuple[str, int]] = field(default_factory=list)
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> "ModelMeta":
        return cls(
            ir_version=model.ir_version,
            opset_import=[(o.domain, o.version) for o in model.opset_import],
            producer_name=model.producer_name,
            producer_version=model.producer_version,
            domain=model.domain,
            model_version=model.model_version,
            doc_string=model.doc_string,
            metadata_props={p.key: p.value for p in model.metadata_props},
        )

    @property
    def opset(self) -> int:
        """The default-domain opset version (what PassContext.opset means)."""
        for domain, version in self.opset_import:
            if domain in ("", "ai.onnx"):
                return version
        return gs.Graph.DEFAULT_OPSET


def fed_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a run feeds, in input order: those without an initializer (``initializer_inputs``
    names the others)."""
    initializers = {tensor.name for tensor in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]


def initializer_inputs(model: onnx.ModelProto) -> list[str]:
    """Names of the top-level graph inputs that also have an initializer, in input order: ONNX's
    overridable initializers (a default a caller may replace; IR 3 lists every initializer so, and
    ``torch.onnx.export(keep_initializers_as_inputs=True)`` every weight)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name in initializers]


def freeze_initializer_inputs(model: onnx.ModelProto) -> list[str]:
    """Take the graph inputs that have an initializer out of ``model``'s inputs (in place), so that
    they are the constants they hold: the passes read weights as constants (a scan's decays, a
    Conv's kernel), and onnx-graphsurgeon's import would drop such inputs anyway, silently. The
    names frozen, for the caller to say (``initializer_inputs``)."""
    frozen = initializer_inputs(model)
    if frozen:
        names = set(frozen)
        kept = [value for value in model.graph.input if value.name not in names]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.ir_version = max(model.ir_version, FIRST_IR_WITH_CONSTANT_INITIALIZERS)
    return frozen


def _negative_perms(model: onnx.ModelProto):
    """(Transpose, its perm attribute, the perm counted from the start) for every Transpose whose perm counts
    axes from the end and is a permutation once counted from the start (p + rank, rank = len(perm))."""
    for graph in all_graphs(model.graph):
        for node in graph.node:
            if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
                continue
            perm = next((attribute for attribute in node.attribute if attribute.name == "perm"), None)
            if perm is None or not any(axis < 0 for axis in perm.ints):
                continue
            rank = len(perm.ints)
            counted = [axis + rank if axis < 0 else axis for axis in perm.ints]
            if sorted(counted) == list(range(rank)):
                yield node, perm, counted


def has_negative_perms(model: onnx.ModelProto) -> bool:
    return next(_negative_perms(model), None) is not None


def normalize_negative_perms(model: onnx.ModelProto) -> list[str]:
    """Give every Transpose whose ``perm`` counts axes from the end (TorchScript's exporter writes
    ``x.permute(0, -2, -1, 1)`` as perm [0, -2, -1, 1], which ONNX's schema and ONNX Runtime refuse) the
    same perm counted from the start, p + rank for each p < 0, where that gives a permutation of
    range(rank) (else it is left for the checks to refuse). In place, in every graph; the names of the
    Transposes changed, for the caller to say."""
    changed = []
    for node, perm, counted in list(_negative_perms(model)):
        perm.ints[:] = counted
        changed.append(node.name or "(unnamed)")
    return changed


def _default_domain_spelled_long(model: onnx.ModelProto):
    """Opset imports (the model's, its functions') that name ONNX's default domain 'ai.onnx' instead of ''. (A node
    of domain 'ai.onnx' is refused by model_check: "No opset import for domain 'ai.onnx'".)"""
    imports = [model.opset_import] + [function.opset_import for function in model.functions]
    yield from (entry for entries in imports for entry in entries if entry.domain == "ai.onnx")


def has_default_domain_spelled_long(model: onnx.ModelProto) -> bool:
    return next(_default_domain_spelled_long(model), None) is not None


def normalize_default_domain(model: onnx.ModelProto) -> None:
    """Name ONNX's default domain '' where the model spells it 'ai.onnx' (the same domain: onnx's checker and
    ONNX Runtime take both), in place: onnx-graphsurgeon kept an import of 'ai.onnx' 17 and added '' at version 1
    beside it on export, so the compiled model's Add was Add-1 to ONNX Runtime ('Could not find an
    implementation for Add(1)': exit 3 after every pass; with --verify none an output ONNX Runtime cannot load,
    adv18). model_check refuses the two spellings imported at different versions."""
    for entry in list(_default_domain_spelled_long(model)):
        entry.domain = ""
    for imports in [model.opset_import] + [function.opset_import for function in model.functions]:
        entries = [(entry.domain, entry.version) for entry in imports]
        unique = list(dict.fromkeys(entries))   # 'ai.onnx' and '' at one version, which model_check allows: one left
        if len(unique) != len(entries):
            del imports[:]
            imports.extend(onnx.helper.make_opsetid(domain, version) for domain, version in unique)


# IR 3 lists every initializer as a graph input; IR 4 (2019-01-22) lets an initializer be a constant
# that is no input, and changes nothing else. A frozen model and the constants passes add need it.
FIRST_IR_WITH_CONSTANT_INITIALIZERS = onnx.IR_VERSION_2019_1_22


def model_to_graph(model: onnx.ModelProto) -> gs.Graph:
    """Import into onnx-graphsurgeon (seconds for a 100k-node graph: show a spinner). A node of another domain than
    ONNX's own gets its domain in its op, ``x.Identity`` (``graph_to_model`` takes it out again): the passes match
    ops by ``node.op``, and a model-local function (or any custom op) named like an ONNX op was rewritten as that op
    (adv23: a function ``x.Identity`` computing a + 1 removed by remove-identity; with --verify none, the model
    written wrong, exit 0). An ONNX op's name holds no '.', so no such op is ever read as one."""
    graph = gs.import_onnx(model)
    for node in _gs_nodes(graph):
        if node.domain not in _ONNX_DOMAINS:
            node.op = f"{node.domain}.{node.op}"
    return graph


_ONNX_DOMAINS = (None, "", "ai.onnx")   # (onnx-graphsurgeon: None for the default)


def _gs_nodes(graph: gs.Graph):
    """The nodes of ``graph``, of its subgraphs and of its functions (and theirs), depth first."""
    stack = [graph, *getattr(graph, "functions", ())]
    while stack:
        current = stack.pop()
        for node in current.nodes:
            yield node
            for value in node.attrs.values():
                if isinstance(value, gs.Graph):
                    stack.append(value)
                elif isinstance(value, (list, tuple)):
                    stack.extend(item for item in value if isinstance(item, gs.Graph))


def still_named_with_its_domain(node: gs.Node) -> bool:
    """``node`` is of another domain than ONNX's and carries it in its op (``model_to_graph``'s ``x.Identity``)."""
    return node.domain not in _ONNX_DOMAINS and node.op.startswith(f"{node.domain}.")


@contextlib.contextmanager
def own_op_names(graph: gs.Graph) -> Iterator[None]:
    """For a block that hands ``graph`` to onnx-graphsurgeon's own export (its fold_constants runs the constant nodes
    in ONNX Runtime, a model-local function too): its nodes of other domains under their own op names, but those
    named like an ONNX op, which keep ``x.Identity`` (onnx-graphsurgeon would take them for that op:
    ``still_named_with_its_domain`` says which, for its caller to leave them out); named with their domains again
    after the block."""
    renamed = [node for node in _gs_nodes(graph)
               if still_named_with_its_domain(node) and not onnx.defs.has(node.op[len(node.domain) + 1:])]
    for node in renamed:
        node.op = node.op[len(node.domain) + 1:]
    try:
        yield
    finally:
        for node in renamed:
            node.op = f"{node.domain}.{node.op}"


def _domain_out_of_op_types(model: onnx.ModelProto) -> None:
    """``model_to_graph``'s ``x.Identity`` back to op ``Identity`` of domain ``x``, in every graph and function."""
    graphs = list(all_graphs(model.graph))
    for function in model.functions:
        graphs.append(function)
        for node in function.node:
            graphs.extend(_attribute_graphs(node))
    for graph in graphs:
        for node in graph.node:
            if node.domain not in _ONNX_DOMAINS and node.op_type.startswith(f"{node.domain}."):
                node.op_type = node.op_type[len(node.domain) + 1:]


def graph_is_topologically_sorted(graph: gs.Graph) -> bool:
    """O(nodes + edges): every node's producers come before it in ``graph.nodes``."""
    position = {id(node): index for index, node in enumerate(graph.nodes)}
    for index, node in enumerate(graph.nodes):
        for tensor in node.inputs:
            for producer in tensor.inputs:
                if position.get(id(producer), -1) >= index:
                    return False
    return True


def graph_to_model(graph: gs.Graph, meta: ModelMeta | None = None) -> onnx.ModelProto:
    """Export a graph, sorting it first if a pass left nodes out of order, and restore
    the model-level fields of the original model (ir_version, producer, metadata). IR 3 becomes
    IR 4: the graph lists its constants as initializers only; a graph whose opset a pass lowered gets at most the
    IR version that opset asks for."""
    if not graph_is_topologically_sorted(graph):
        toposort(graph)
    model = gs.export_onnx(graph, do_type_check=False)
    _domain_out_of_op_types(model)
    if meta is not None:
        if meta.ir_version:
            model.ir_version = max(meta.ir_version, FIRST_IR_WITH_CONSTANT_INITIALIZERS)
            if graph.opset < meta.opset:
                # A pass wrote an older opset (opset18-to-17, for tpu-mlir): the IR version that opset asks for, as
                # an exporter of it would write (the dynamo exporter's IR 10 with opset 18 is more than tpu-mlir's
                # ONNX Runtime 1.16 reads: "Unsupported model IR version: 10, max supported IR version: 9").
                model.ir_version = min(model.ir_version, max(onnx.helper.find_min_ir_version_for(
                    [o for o in model.opset_import if o.domain in ("", "ai.onnx")], ignore_unknown=True),
                    FIRST_IR_WITH_CONSTANT_INITIALIZERS))
        # Keep domains gs does not know about (the graph's own opsets win on conflicts).
        present = {o.domain for o in model.opset_import}
        for domain, version in meta.opset_import:
            if domain not in present:
                model.opset_import.append(onnx.helper.make_opsetid(domain, version))
        model.producer_name = meta.producer_name or model.producer_name
        model.producer_version = meta.producer_version or model.producer_version
        model.domain = meta.domain
        model.model_version = meta.model_version
        model.doc_string = meta.doc_string
        del model.metadata_props[:]
        for key, value in meta.metadata_props.items():
            model.metadata_props.add(key=key, value=value)
    return model


def copy_graph(graph: gs.Graph) -> gs.Graph:
    """``graph.copy()`` with each value's type kept: onnx-graphsurgeon 0.6.1's copy makes every Variable a tensor
    (``Variable(name, dtype, shape)``), so a Loop body's sequence input and output, copied, were exported as tensors
    and the model refused by shape inference (adv15: `--pipeline seed` on a Loop that appends to a sequence, exit 3
    blaming fold-constants)."""
    copied = graph.copy()
    _copy_types(graph, copied)
    return copied


def _copy_types(original: gs.Graph, copied: gs.Graph) -> None:
    copies = copied.tensors()
    for name, tensor in original.tensors().items():
        kind = getattr(tensor, "type", "tensor_type")
        if isinstance(tensor, gs.Variable) and kind != "tensor_type" and isinstance(copies.get(name), gs.Variable):
            copies[name].type = kind
    for node, node_copy in zip(original.nodes, copied.nodes):
        for key, value in node.attrs.items():
            if isinstance(value, gs.Graph) and isinstance(node_copy.attrs.get(key), gs.Graph):
                _copy_types(value, node_copy.attrs[key])


def replace_graph_contents(target: gs.Graph, source: gs.Graph) -> None:
    """Make ``target`` hold ``source``'s nodes and tensors.

    Passes rewrite the manager's graph in place; a pass that builds a new graph (onnxsim,
    folding on a copy) moves the result into the graph object it was given.
    """
    target.nodes = source.nodes
    target.inputs = source.inputs
    target.outputs = source.outputs
    target.opset = source.opset
    target.import_domains = source.import_domains
    target.functions = source.functions
