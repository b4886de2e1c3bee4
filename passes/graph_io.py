"""Reading and writing models, and moving between ``onnx.ModelProto`` and ``gs.Graph``.

Everything that touches the file system for a model goes through here, so that bad input
gives one clear line (``InputError``) and an output file is never left half written.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from passes.one_line import one_line


class GraphIOError(Exception):
    """A model file could not be read or written; the message is one line for the user."""


class InputError(GraphIOError):
    """The input is missing, not an ONNX model, truncated, or its external data is missing."""


class OutputError(GraphIOError):
    """The output cannot be written (unwritable place, or it would overwrite the input)."""


@dataclass
class LoadedModel:
    model: onnx.ModelProto
    path: Path
    # True when the file kept its weights in external data files; outputs keep that form.
    used_external_data: bool


def read_model(path: str | os.PathLike) -> LoadedModel:
    """Load a model with its external data, turning every failure into a one-line InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a directory, not an ONNX file: {path}")
    try:
        # Structure first: we need to see whether tensors live outside the file before
        # onnx rewrites them to inline data while loading.
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as error:
        raise InputError(f"not an ONNX file, or truncated: {path} ({one_line(error, limit=300)})") from None
    except Exception as error:  # onnx wraps protobuf errors differently across versions
        raise InputError(f"cannot read {path} as ONNX: {one_line(error, limit=300)}") from None
    if not model.HasField("graph") or (model.ir_version == 0 and not model.opset_import):
        raise InputError(f"not an ONNX model (no graph or version found): {path}")
    if not model.opset_import:
        # Required by every IR version we read; a file cut right after its graph parses without it.
        raise InputError(f"incomplete ONNX model (no opset_import; truncated?): {path}")

    external = any(uses_external_data(t) for t in _all_initializers(model))
    if external:
        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as error:
            raise InputError(f"external data of {path} could not be read: {one_line(error, limit=300)}") from None
    return LoadedModel(model=model, path=path, used_external_data=external)


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Like ``read_model`` but returns only the ModelProto."""
    return read_model(path).model


def _all_initializers(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t


def is_same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output_path(output: str | os.PathLike, *, input_path: str | os.PathLike | None = None,
                      allow_overwrite_input: bool = False) -> Path:
    """Fail early (before minutes of work) if the output cannot be written."""
    output = Path(output)
    if input_path is not None and not allow_overwrite_input and is_same_file(output, input_path):
        raise OutputError(f"output {output} is the input file; pass --in-place to overwrite it")
    if output.is_dir():
        raise OutputError(f"output is a directory: {output}")
    directory = output.parent if str(output.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"output directory does not exist: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"output directory is not writable: {directory}")
    # os.access says yes to root everywhere, and knows nothing of read-only or special file
    # systems: create (and remove) a file there to be sure before minutes of work.
    try:
        with tempfile.NamedTemporaryFile(prefix=f".{output.name}.probe-", dir=directory):
            pass
    except OSError as error:
        raise OutputError(f"output directory is not writable: {directory} ({one_line(error, limit=300)})") from None
    return output


def save_model_atomic(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool = False,
                      input_path: str | os.PathLike | None = None,
                      allow_overwrite_input: bool = False) -> Path:
    """Write ``model`` so that ``path`` is either the complete new model or untouched.

    The model is written in a temporary directory beside the target and moved into place
    with ``os.replace`` (atomic on one file system). With ``external_data`` the weights go to
    ``<name>.data`` beside the model, moved in before the model itself.
    """
    path = check_output_path(path, input_path=input_path, allow_overwrite_input=allow_overwrite_input)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=directory))
    except OSError as error:
        raise OutputError(f"cannot write in {directory}: {one_line(error, limit=300)}") from None
    try:
        staged_model = staging / path.name
        if external_data:
            # onnx.save rewrites tensors to point at the data file; work on a copy so the
            # caller's model stays self-contained.
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            data_name = f"{path.name}.data"
            onnx.save_model(copy, str(staged_model), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
            if (staging / data_name).exists():
                os.replace(staging / data_name, directory / data_name)
        else:
            onnx.save_model(model, str(staged_model))
        os.replace(staged_model, path)
    except (OSError, ValueError) as error:
        raise OutputError(f"cannot write {path}: {one_line(error, limit=300)}") from None
    finally:
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


def model_to_graph(model: onnx.ModelProto) -> gs.Graph:
    """Import into onnx-graphsurgeon (seconds for a 100k-node graph: show a spinner)."""
    return gs.import_onnx(model)


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
    the model-level fields of the original model (ir_version, producer, metadata)."""
    if not graph_is_topologically_sorted(graph):
        graph.toposort()
    model = gs.export_onnx(graph, do_type_check=False)
    if meta is not None:
        if meta.ir_version:
            model.ir_version = meta.ir_version
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
