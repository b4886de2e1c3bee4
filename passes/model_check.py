"""Is this a model at all? The structural checks every input passes right after it is read.

A model that breaks these rules is bad input (exit 2, one line naming the culprit), not a
verification failure: ONNX Runtime would refuse it, or a pass would loop or mis-rewrite it.

- IR version from 3 (the first with opset imports) and default-domain opset no newer than the
  installed onnx knows;
- every default-domain (and ai.onnx.ml) op exists at the model's opset;
- single assignment: no tensor produced twice (by two nodes, or by a node and a graph input or
  initializer), no initializer defined twice, no graph input or output listed twice, no node name given twice in
  one graph (ONNX Runtime refuses it);
- every default-domain (and ai.onnx.ml) node fits its op's schema: known attributes of the declared
  types, required ones present, input and output counts in range, no deprecated op (onnx.checker's
  own node check; ONNX Runtime refuses such a node, and a pass would read a missing attribute);
- every node input is produced somewhere in scope (a subgraph sees its outer graphs' names);
  a subgraph's outputs are its own (an outer value returned directly is refused, as onnx.checker and
  ONNX Runtime do), and an outer value it reads is made before its node (onnx-graphsurgeon would import it twice);
- no cycle (nor among the model's local functions, each defined once), and no more than
  MAX_EXPANDED_NODES nodes with every call of a local function expanded;
- every name and other text is UTF-8 (proto2 would hand a pass bytes);
- every tensor stored in the model (initializers, tensor attributes) holds as many values as its
  dims declare (a 2^40-element claim with no data would otherwise reach ONNX Runtime);
- every Transpose's perm is a permutation (negative axes counted from the end), as long as its input's rank
  where that is declared (a graph input, an initializer) or ONNX's shape inference finds it (an inner value).

Subgraphs (If/Loop/Scan bodies) are checked the same way, with their outer scope.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Optional

import onnx
import onnx.checker
from google.protobuf.descriptor import FieldDescriptor
from onnx.external_data_helper import uses_external_data

from passes.graph_io import FOUR_BIT_TYPES, InputError, all_graphs, all_tensors, expanded_node_count, tensor_byte_size
from passes.one_line import printable

_CHECKED_DOMAINS = {"": "", "ai.onnx": "", "ai.onnx.ml": "ai.onnx.ml"}


# The most nodes a model may stand for with every call of its local functions expanded (4 times a
# VMamba-T export's 77k): functions that call the one before twice, 20 deep, are a 2 KB model of a million
# nodes, which took 14 minutes to compile (ONNX Runtime's own inlining took minutes at 16 deep).
MAX_EXPANDED_NODES = 1 << 18


class InvalidModelError(InputError):
    """The file is ONNX, but not a valid model."""


def _node_label(node: onnx.NodeProto) -> str:
    return f"node '{printable(node.name)}' ({printable(node.op_type)})" if node.name else f"a {printable(node.op_type)} node"


@lru_cache(maxsize=None)
def _op_exists(op_type: str, version: int, domain: str) -> bool:
    try:
        onnx.defs.get_schema(op_type, version, domain)
    except onnx.defs.SchemaError:
        return False
    return True


def _schema_context(model: onnx.ModelProto, opsets: dict[str, int]):
    context = onnx.checker.C.CheckerContext()
    context.ir_version = model.ir_version
    context.opset_imports = dict(opsets)
    return context


def _check_node_schema(node: onnx.NodeProto, context, where: str) -> None:
    """onnx.checker's node check (attribute names, types and presence, input and output counts,
    deprecation). Subgraph bodies are left out of it (replaced by empty graphs): ``_check_graph``
    checks them itself, with the outer names in scope that the checker's lone node would lack."""
    if any(attribute.HasField("g") or attribute.graphs for attribute in node.attribute):
        stripped = onnx.NodeProto()
        stripped.CopyFrom(node)
        for attribute in stripped.attribute:
            if attribute.HasField("g"):
                attribute.g.CopyFrom(onnx.GraphProto(name="body"))
            for index in range(len(attribute.graphs)):
                attribute.graphs[index].CopyFrom(onnx.GraphProto(name="body"))
        node = stripped
    try:
        onnx.checker.C.check_node(node.SerializeToString(), context, onnx.checker.C.LexicalScopeContext())
    except onnx.checker.ValidationError as error:
        reason = str(error).split("\n")[0].strip()   # its second part repeats the node's name and op
        raise InvalidModelError(f"{_node_label(node)} in {where}: {printable(reason)}") from None


def check_model(model: onnx.ModelProto) -> None:
    """Raise ``InvalidModelError`` (one line) if the model breaks a rule above."""
    if model.ir_version > onnx.IR_VERSION:
        raise InvalidModelError(f"IR version {model.ir_version} is newer than the newest this onnx reads ({onnx.IR_VERSION})")
    if model.ir_version < onnx.IR_VERSION_2017_11_3:   # 3 (IR_VERSION_2017_10_30 is 2); an output keeps the input's IR version, 3 raised to 4
        raise InvalidModelError(f"IR version {model.ir_version} is older than 3, the first with opset imports "
                                "(onnx.checker refuses it)")
    opsets = _opset_imports(model.opset_import, "")
    _check_text(model)
    local_functions = {(function.domain, function.name) for function in model.functions}
    check_local_functions(model)
    _check_function_bodies(model, opsets, local_functions)
    for tensor in all_tensors(model):
        _check_tensor_size(tensor)
        _check_tensor_type(tensor)
    graphs, nodes = _every_graph(model)
    _check_value_types(graphs)
    _check_no_sparse_tensors(graphs, nodes)
    _check_einsum_equations(nodes)
    _check_constant_of_shape_values(nodes)
    _check_transpose_perms(graphs, nodes)
    _check_graph(model.graph, outer=frozenset(), opsets=opsets, functions=local_functions, where="graph",
                 context=_schema_context(model, opsets))
    _check_inferred_transpose_ranks(model, graphs)


def _opset_imports(imports, where: str) -> dict[str, int]:
    """The opset imports of the model (``where`` empty) or of a local function, by domain ('ai.onnx'
    read as ''): each version a 32-bit integer, each domain at one version, the default domain's no
    newer than the installed onnx knows."""
    opsets: dict[str, int] = {}
    for entry in imports:
        if not -2**31 <= entry.version < 2**31:   # onnx.checker's context takes a C int: a TypeError past it
            raise InvalidModelError(f"{where}opset version {entry.version} of domain '{printable(entry.domain)}' is "
                                    "out of range (a 32-bit integer)")
        domain = _CHECKED_DOMAINS.get(entry.domain, entry.domain)
        if domain in opsets and opsets[domain] != entry.version:
            raise InvalidModelError(f"{where}opset of domain '{printable(entry.domain)}' imported twice "
                                    f"({opsets[domain]} and {entry.version})")
        opsets[domain] = entry.version
    newest = onnx.defs.onnx_opset_version()
    if opsets.get("", 0) > newest:
        raise InvalidModelError(f"{where}opset {opsets['']} is newer than the newest this onnx knows ({newest})")
    for domain, known in _newest_onnx_domains().items():   # ONNX's other domains too (adv18)
        if opsets.get(domain, 0) > known:
            raise InvalidModelError(f"{where}opset {opsets[domain]} of domain '{domain}' is newer than the newest this "
                                    f"onnx knows ({known})")
    return opsets


@lru_cache(maxsize=1)
def _newest_onnx_domains() -> dict[str, int]:
    """The newest version the installed onnx knows of each of ONNX's own domains but the default one: a model
    importing ai.onnx.ml 99 was written with --verify none (exit 0) and refused under verification by a
    ValidateOpsetForDomain line of ONNX Runtime's C++ template names."""
    newest = {"ai.onnx.ml": onnx.defs.onnx_ml_opset_version()}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain not in ("", "ai.onnx", "ai.onnx.ml"):
            newest[schema.domain] = max(newest.get(schema.domain, 0), schema.since_version)
    return newest


def _check_function_bodies(model: onnx.ModelProto, opsets: dict[str, int], functions: set) -> None:
    """A model-local function's own opset imports and its body, as the main graph's are checked
    (``_check_graph``: ops that exist at the function's opsets and fit their schemas, every value read
    produced once, no cycle, If/Loop bodies inside it included): a function importing opset 999 or 0 of
    the default domain, calling an op that its opset lacks or with an attribute its schema does not have,
    or reading a value nothing produces was compiled with --verify none (exit 0) into a model ONNX Runtime
    refuses. A domain the function does not import is the model's."""
    for function in model.functions:
        label = f"model-local function '{printable(function.domain)}::{printable(function.name)}'"
        own = dict(opsets)
        own.update(_opset_imports(function.opset_import, f"{label}: "))
        body = onnx.GraphProto(name=function.name, node=function.node,
                               input=[onnx.ValueInfoProto(name=name) for name in function.input],
                               output=[onnx.ValueInfoProto(name=name) for name in function.output if name])
        _check_graph(body, outer=frozenset(), opsets=own, functions=functions, where=label,
                     context=_schema_context(model, own))


def _every_graph(model: onnx.ModelProto) -> tuple[list[onnx.GraphProto], list[onnx.NodeProto]]:
    """Every graph (the main one, If/Loop/Scan bodies, those inside functions) and every node."""
    graphs = list(all_graphs(model.graph))
    nodes = [node for function in model.functions for node in function.node]
    for node in nodes[:]:   # If/Loop bodies inside functions
        for attribute in node.attribute:
            for body in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                graphs += all_graphs(body)
    nodes += [node for graph in graphs for node in graph.node]
    return graphs, nodes


_EINSUM_TERM = re.compile(r"[A-Za-z]*(\.\.\.)?[A-Za-z]*")


def _check_einsum_equations(nodes: list[onnx.NodeProto]) -> None:
    """An Einsum equation outside ONNX's grammar (terms of ASCII letters with at most one ellipsis, joined by commas,
    one optional '->', spaces anywhere): ONNX 1.x's shape inference, which every pass and the verifier's size check
    run, never returns on some of them ('i...j...,jk->ik', 'ab\\c,jk->ik', a non-ASCII letter: s25's CLI hung, Ctrl-C
    and SIGTERM unanswered); numpy and ONNX Runtime refuse them. Checked before anything infers shapes. (A term with
    two ellipses had a message of its own until s26; the grammar's "at most one '...'" says it.)"""
    for node in nodes:
        if node.op_type != "Einsum" or node.domain not in ("", "ai.onnx"):
            continue
        for attribute in node.attribute:
            if attribute.name == "equation" and attribute.type == onnx.AttributeProto.STRING:
                equation = attribute.s.decode("utf-8", "replace")
                inputs, arrow, output = equation.replace(" ", "").partition("->")
                terms = inputs.split(",") + ([output] if arrow else [])
                if "->" in output or not all(_EINSUM_TERM.fullmatch(term) for term in terms):
                    raise InvalidModelError(f"{_node_label(node)}: equation '{printable(equation)}' is not ONNX's "
                                            "Einsum grammar (terms of ASCII letters and at most one '...', joined by "
                                            "',', one optional '->')")


def _check_constant_of_shape_values(nodes: list[onnx.NodeProto]) -> None:
    """A ConstantOfShape whose `value` is not one element (its schema: a one-element tensor): ONNX Runtime refuses the
    node, but with --verify none fold-constants folded it into a constant, a model ONNX Runtime runs written from one
    it refuses (adv13: a value of [1.0, 2.0], exit 0)."""
    for node in nodes:
        if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx"):
            continue
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.type == onnx.AttributeProto.TENSOR:
                elements = 1
                for dim in attribute.t.dims:
                    elements *= dim
                if elements != 1:
                    raise InvalidModelError(f"{_node_label(node)}: value holds {elements:,} elements, dims "
                                            f"{list(attribute.t.dims)}; ConstantOfShape takes one")


def _onnx_transposes(graph_nodes) -> Iterator[tuple[onnx.NodeProto, list[int]]]:
    """(node, perm) of every ONNX Transpose given a perm."""
    for node in graph_nodes:
        if node.op_type == "Transpose" and node.domain in ("", "ai.onnx"):
            perm = next((list(attribute.ints) for attribute in node.attribute if attribute.name == "perm"), None)
            if perm is not None:
                yield node, perm


def transpose_rank_mismatch(graph: onnx.GraphProto, values: Iterable[onnx.ValueInfoProto]) -> Optional[str]:
    """The first Transpose of `graph` whose perm is not as long as its input's rank, the rank known from `values` (those
    with a shape: the graph inputs, or everything ONNX's inference found) or an initializer; None where there is none.
    ONNX's inference takes a shorter perm; ONNX Runtime refuses it (adv12)."""
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in values
             if value.type.tensor_type.HasField("shape")}
    ranks.update((tensor.name, len(tensor.dims)) for tensor in graph.initializer)
    for node, perm in _onnx_transposes(graph.node):
        rank = ranks.get(node.input[0]) if node.input else None
        if rank is not None and len(perm) != rank:
            return f"{_node_label(node)}: perm {perm} has {len(perm)} axes, its input '{printable(node.input[0])}' {rank}"
    return None


def einsum_output_mismatch(graph: onnx.GraphProto, values: Iterable[onnx.ValueInfoProto]) -> Optional[str]:
    """The first Einsum of `graph` whose output is declared (in `values`) with a size its operands contradict: a letter
    that an operand gives a fixed size other than 1 (a 1 broadcasts) declared another fixed size in the output. ONNX's
    inference does not unify a letter across operands, so with a symbolic size beside it (`bcij,bcjk->bcik` of
    (N, C, 2, 3) and (M, 5, 3, 4) declared (N, 2, 2, 4)) the contradiction passes strict inference, and the check after
    einsum-to-matmul, whose MatMul's inference does see it, blamed the pass (adv12's lead, adv13: exit 3). Terms
    with '...' are not read; None where there is none."""
    shapes = {value.name: value.type.tensor_type.shape.dim for value in values
              if value.type.tensor_type.HasField("shape")}
    shapes.update((tensor.name, [onnx.TensorShapeProto.Dimension(dim_value=dim) for dim in tensor.dims])
                  for tensor in graph.initializer)
    for node in graph.node:
        if node.op_type != "Einsum" or node.domain not in ("", "ai.onnx") or not node.output or \
                node.output[0] not in shapes:
            continue
        equation = next((attribute.s.decode("utf-8", "replace") for attribute in node.attribute
                         if attribute.name == "equation"), "")
        inputs, arrow, output = equation.replace(" ", "").partition("->")
        terms = inputs.split(",")
        if not arrow or "..." in equation or len(terms) != len(node.input):
            continue
        sizes: dict[str, tuple[int, str, int]] = {}   # letter -> (size, operand, axis), a fixed size other than 1
        for term, name in zip(terms, node.input):
            dims = shapes.get(name)
            if dims is None or len(dims) != len(term):
                continue
            for axis, (letter, dim) in enumerate(zip(term, dims)):
                if dim.HasField("dim_value") and dim.dim_value != 1:
                    sizes.setdefault(letter, (dim.dim_value, name, axis))
        declared = shapes[node.output[0]]
        if len(declared) != len(output):
            continue
        for axis, (letter, dim) in enumerate(zip(output, declared)):
            if letter in sizes and dim.HasField("dim_value") and dim.dim_value != sizes[letter][0]:
                size, operand, operand_axis = sizes[letter]
                return (f"{_node_label(node)}: equation '{printable(equation)}' gives '{letter}' size {size} (input "
                        f"'{printable(operand)}' axis {operand_axis}), its output '{printable(node.output[0])}' "
                        f"declares {dim.dim_value} at axis {axis}")
    return None


def _static_type(value_type: onnx.TypeProto) -> Optional[tuple[int, Optional[list[Optional[int]]]]]:
    """(element type, dims with None where not a number; None where the rank is unknown) of a tensor type."""
    if not value_type.HasField("tensor_type"):
        return None
    tensor_type = value_type.tensor_type
    dims = ([dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
            if tensor_type.HasField("shape") else None)
    return tensor_type.elem_type, dims


def if_branch_mismatch(graph: onnx.GraphProto) -> Optional[str]:
    """The first If (in `graph` or a body nested in it) whose branch output has another element type, rank or fixed
    size than the If's output declares (or inference found), in `graph` through ONNX's inference; None where there is
    none. ONNX's inference merges the branches' shapes into an unknown size and ONNX Runtime runs such a model, the
    output as the branch makes it; once fold-constants flattened an If of a constant condition, the check after it
    met the contradiction and blamed the pass (adv17: the else branch's Concat (1, 8) under a declared (1, 4), exit 3)."""
    for outer in all_graphs(graph):
        declared = {value.name: _static_type(value.type) for value in list(outer.output) + list(outer.value_info)}
        for node in outer.node:
            if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
                continue
            for attribute in node.attribute:
                if attribute.name not in ("then_branch", "else_branch") or not attribute.HasField("g"):
                    continue
                branch = attribute.g
                inner = {value.name: _static_type(value.type) for value in list(branch.value_info) + list(branch.output)}
                for produced, name in zip(branch.output, node.output):
                    made, wanted = inner.get(produced.name), declared.get(name)
                    if made is None or wanted is None:
                        continue
                    (made_type, made_dims), (wanted_type, wanted_dims) = made, wanted
                    if made_type and wanted_type and made_type != wanted_type:
                        why = (f"element type {onnx.helper.tensor_dtype_to_string(made_type)}, where "
                               f"'{printable(name)}' is {onnx.helper.tensor_dtype_to_string(wanted_type)}")
                    elif made_dims is not None and wanted_dims is not None and (
                            len(made_dims) != len(wanted_dims) or any(
                                a is not None and b is not None and a != b for a, b in zip(made_dims, wanted_dims))):
                        shown = [str(d) if d is not None else "?" for d in made_dims]
                        why = (f"shape ({', '.join(shown)}), where '{printable(name)}' is declared "
                               f"({', '.join(str(d) if d is not None else '?' for d in wanted_dims)})")
                    else:
                        continue
                    return (f"{_node_label(node)}: its {attribute.name.split('_')[0]} branch's output "
                            f"'{printable(produced.name)}' has {why}")
    return None


def _check_transpose_perms(graphs: list[onnx.GraphProto], nodes: list[onnx.NodeProto]) -> None:
    """A Transpose whose perm is no permutation of its axes (an axis twice, one past the rank; a negative axis
    counted from the end, as TorchScript writes them, is normalized later), or, where its input is a graph input
    or an initializer of declared rank, of another length than that rank. ONNX Runtime refuses such a node, but
    with --verify none unit-axes-to-reshape read the perm as given and made a Reshape of it (adv12: perm [0, 0, 1,
    3] of a (1, 3, 1, 4) input, or [0, 1] of a (3, 4, 1) one, became a model ONNX Runtime runs, exit 0)."""
    for node, perm in _onnx_transposes(nodes):
        if sorted(axis + len(perm) if axis < 0 else axis for axis in perm) != list(range(len(perm))):
            raise InvalidModelError(f"{_node_label(node)}: perm {perm} is not a permutation of {len(perm)} axes")
    for graph in graphs:
        mismatch = transpose_rank_mismatch(graph, graph.input)
        if mismatch is not None:
            raise InvalidModelError(mismatch)


def _check_inferred_transpose_ranks(model: onnx.ModelProto, graphs: list[onnx.GraphProto]) -> None:
    """A Transpose perm shorter or longer than the rank ONNX's (plain, non-strict) shape inference finds for its
    input, where the input is an inner value the declarations leave unranked: ONNX Runtime refuses the node, and
    `--pipeline unit-axes-to-reshape --verify none` wrote it as it came (adv12's lead, adv13: Relu of a (3, 4, 1)
    input, then perm [0, 1], exit 0). Inference runs only when such a Transpose exists (3.3 s for VMamba-T's
    naive export, 96 Transposes, on the 2-core dev machine); a model it cannot infer (over 2 GiB, or a
    contradiction it raises on) is left to the checks after each pass."""
    def declared(graph: onnx.GraphProto) -> set[str]:
        return ({value.name for value in list(graph.input) + list(graph.output) + list(graph.value_info)
                 if value.type.tensor_type.HasField("shape")} | {tensor.name for tensor in graph.initializer})
    if not any(node.input and node.input[0] not in declared(graph)
               for graph in graphs for node, _ in _onnx_transposes(graph.node)):
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:   # ValueError over 2 GiB, InferenceError on a contradiction: the later checks name it
        return
    for graph in _every_graph(inferred)[0]:
        mismatch = transpose_rank_mismatch(graph, list(graph.input) + list(graph.output) + list(graph.value_info))
        if mismatch is not None:
            raise InvalidModelError(mismatch)


_TYPE_WORDS = {"optional_type": "an optional", "map_type": "a map", "sequence_type": "a sequence",
               "opaque_type": "an opaque value"}
_TYPE_PLURALS = {"optional_type": "optionals", "map_type": "maps", "sequence_type": "sequences",
                 "opaque_type": "opaque values", "sparse_tensor_type": "sparse tensors", None: "untyped values"}


def _uncarried_type(value_type: onnx.TypeProto) -> str | None:
    """What onnx-graphsurgeon cannot write back as it read it ('an optional', 'a sequence of maps'), or
    None for a tensor (dense or sparse), a sequence of tensors or no type. An optional or a map made its
    export fail (UnboundLocalError, exit 1), a sequence of sequences came back as one of untyped tensors."""
    kind = value_type.WhichOneof("value")
    if kind == "sequence_type":
        element = value_type.sequence_type.elem_type.WhichOneof("value")
        return None if element == "tensor_type" else f"a sequence of {_TYPE_PLURALS.get(element, element)}"
    return None if kind in (None, "tensor_type", "sparse_tensor_type") else _TYPE_WORDS.get(kind, kind)


def _without_dim_names(value_type: onnx.TypeProto) -> onnx.TypeProto:
    """The type with its symbolic dims' names cleared (exporters name one dim differently in two places)."""
    plain = onnx.TypeProto()
    plain.CopyFrom(value_type)
    for dim in plain.tensor_type.shape.dim if plain.HasField("tensor_type") else ():
        dim.ClearField("dim_param")
    return plain


def _check_value_types(graphs: list[onnx.GraphProto]) -> None:
    """Every declared value is of a type onnx-graphsurgeon carries (``_uncarried_type``), and no
    value_info entry retypes a graph input, a graph output or an earlier entry."""
    for graph in graphs:
        for role, values in (("input", graph.input), ("output", graph.output), ("value_info", graph.value_info)):
            for value in values:
                kind = _uncarried_type(value.type)
                if kind is not None:
                    raise InvalidModelError(f"{role} '{printable(value.name)}' of graph '{printable(graph.name)}' is "
                                            f"{kind}: only tensors and sequences of tensors are supported")
                if role != "value_info" and graph is graphs[0] and value.type.WhichOneof("value") is None:
                    # adv20: an input with no type at all passed --verify none, written as it came (exit 0); a verified
                    # run refused it only when making its random data
                    raise InvalidModelError(f"{role} '{printable(value.name)}' of graph '{printable(graph.name)}' has "
                                            "no type, which onnx.checker requires of a graph's inputs and outputs")
                element = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else None
                if element is not None and (element not in _DEFINED_TENSOR_TYPES and element != 0
                                            or element == 0 and role != "value_info" and graph is graphs[0]):
                    # adv13: 999 on a graph input was a KeyError (exit 1); 0 (no type) on the model's own inputs and
                    # outputs, which onnx.checker requires, one onnxsim failed on (a body's may be left to inference)
                    raise InvalidModelError(f"{role} '{printable(value.name)}' of graph '{printable(graph.name)}' is "
                                            f"of element type {element}, "
                                            f"{'UNDEFINED' if element == 0 else 'which ONNX does not define'}")
                dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
                negative = next(((axis, dim.dim_value) for axis, dim in enumerate(dims)
                                 if dim.HasField("dim_value") and dim.dim_value < 0), None)
                if negative is not None:   # adv13: (-5, 4) verified on random data, written as it came
                    raise InvalidModelError(f"{role} '{printable(value.name)}' of graph '{printable(graph.name)}' "
                                            f"declares dimension {negative[1]} at axis {negative[0]}: a size is 0 or "
                                            "more (a size that varies is named)")
        # onnx-graphsurgeon gives a value the type of its last value_info entry: one naming a graph input or
        # output with another type than the graph declares changed the compiled model's interface (ONNX
        # Runtime runs the input by the declared one), two entries of one value took the second
        declared = {value.name: ("graph input", _without_dim_names(value.type)) for value in graph.input}
        declared.update({value.name: ("graph output", _without_dim_names(value.type)) for value in graph.output})
        for value in graph.value_info:
            role, value_type = declared.setdefault(value.name, ("earlier value_info", _without_dim_names(value.type)))
            if _without_dim_names(value.type) != value_type:
                raise InvalidModelError(f"value_info '{printable(value.name)}' of graph '{printable(graph.name)}' gives "
                                        f"a value another type than its {role} entry")


def _check_no_sparse_tensors(graphs: list[onnx.GraphProto], nodes: list[onnx.NodeProto]) -> None:
    """onnx-graphsurgeon reads no sparse tensor: a sparse initializer came out as dense float64 zeros
    (written so with --verify none), a Constant's sparse_value made a model ONNX Runtime refused."""
    for graph in graphs:
        for sparse in graph.sparse_initializer:
            raise InvalidModelError(f"sparse initializer '{printable(sparse.values.name)}': sparse tensors are not "
                                    "supported (store it dense)")
    for node in nodes:
        if any(a.HasField("sparse_tensor") or a.sparse_tensors for a in node.attribute):
            raise InvalidModelError(f"{_node_label(node)} holds a sparse tensor attribute: sparse tensors are not "
                                    "supported (store it dense)")


def check_local_functions(model: onnx.ModelProto) -> None:
    """The model's local functions are defined once, call each other without a cycle and, each call
    expanded, make at most MAX_EXPANDED_NODES nodes; ``InvalidModelError`` otherwise. Every tool that
    hands a model to ONNX Runtime asks this first (tools.tpu_check; the others through
    ``local_functions_refused``, for a file): ONNX Runtime inlines every call while it loads, in
    native code that neither Ctrl-C nor SIGTERM interrupts, so a 1 KB model of functions calling each
    other twice, 60 deep, held them for ever."""
    _check_function_calls(model)
    if model.functions and expanded_node_count(model, MAX_EXPANDED_NODES) > MAX_EXPANDED_NODES:
        raise InvalidModelError(f"the model's local functions, each call expanded (as ONNX Runtime inlines them), "
                                f"make more than {MAX_EXPANDED_NODES:,} nodes")


def local_functions_refused(path) -> str | None:
    """Why ONNX Runtime must not be given the model file at ``path`` for its local functions
    (``check_local_functions``: calls that expand past MAX_EXPANDED_NODES, a cycle), as a message
    naming the file, or None. The tools that build an ONNX Runtime session in their own process ask
    this first (tools.ort_profile, tools.bench, tools.bench_mamba, tools.eval_digits,
    tools.variants_table): a session's inlining of 60 levels of functions calling the one before twice
    ran past 10 minutes, deaf to SIGTERM. Only the structure is read (no external data), and only from
    a regular file (a named pipe's open waits for ever: passes.files.input_file_problem says so); a
    file that does not parse is left to ONNX Runtime, which says so."""
    from passes.files import input_file_problem

    problem = input_file_problem(path, "model")
    if problem:
        return problem
    try:
        structure = onnx.load(str(path), format="protobuf", load_external_data=False)
    except Exception:
        return None
    try:
        check_local_functions(structure)
    except InvalidModelError as error:
        return f"{printable(path)}: {error}"
    return None


def runtime_model(path, what: str = "model") -> onnx.ModelProto:
    """The model file at ``path`` read once as a tool hands it to a runtime (``graph_io.read_model``: a regular
    file, opened once; its external data read from its folder only, without following a link, and held in the
    model, which then refers to no file), its local functions checked (``local_functions_refused``'s rule).
    InputError (one line) otherwise. Everything a tool does with the model (its interface, ONNX Runtime's run,
    a copy for another compiler) comes from this one read: a tool that handed ONNX Runtime the path after checking
    it had the file opened again by name, and a named pipe or another file put in its place between the two was
    what ran (adv22's leftover, adv23; tools.tpu_check and tools.bench's rows, adv24)."""
    from passes.files import input_file_problem
    from passes.graph_io import read_model

    problem = input_file_problem(path, what)
    if problem:
        raise InputError(problem)
    model = read_model(path).model
    try:
        check_local_functions(model)
    except InvalidModelError as error:
        raise InputError(f"{printable(path)}: {error}") from None
    return model


def runtime_bytes(model: onnx.ModelProto, path) -> bytes:
    """``runtime_model``'s model serialized for ONNX Runtime (or a copy on disk); InputError past protobuf's 2 GiB."""
    from passes.graph_io import serialized_model

    data, size = serialized_model(model)
    if data is None:   # (read_model refuses a model past 2 GiB with its data: kept for a model that grew)
        raise InputError(f"{printable(path)}: {size:,} bytes, past protobuf's 2 GiB")
    return data


def model_for_runtime(path, what: str = "model") -> bytes:
    """``runtime_model`` serialized: the bytes ONNX Runtime is given instead of the path."""
    return runtime_bytes(runtime_model(path, what), path)


def _check_function_calls(model: onnx.ModelProto) -> None:
    """Model-local functions are defined once and call each other without a cycle: onnx and ONNX
    Runtime refuse both (recursion would inline forever), so such a model compiled with --verify
    none could never run. A function is (domain, name, overload)."""
    def shown(function: tuple[str, str, str]) -> str:
        domain, name, overload = function
        return f"{printable(domain)}::{printable(name)}" + (f":{printable(overload)}" if overload else "")

    defined = {(f.domain, f.name, getattr(f, "overload", "")) for f in model.functions}

    def calls(nodes) -> list[tuple[str, str, str]]:
        found = []
        for node in nodes:
            called = (node.domain, node.op_type, getattr(node, "overload", ""))
            if called in defined:
                found.append(called)
            for attribute in node.attribute:
                for body in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    found += calls(body.node)
        return found

    callees: dict[tuple[str, str, str], list[tuple[str, str, str]]] = {}
    for function in model.functions:
        function_key = (function.domain, function.name, getattr(function, "overload", ""))
        if function_key in callees:
            raise InvalidModelError(f"model-local function {shown(function_key)} is defined twice")
        if function_key[2]:   # onnx-graphsurgeon drops every overload: the calls would reach another function
            raise InvalidModelError(f"model-local function {shown(function_key)} is an overload: function overloads "
                                    "are not supported")
        callees[function_key] = calls(function.node)
    state: dict[tuple[str, str, str], str] = {}   # "open" while on the path, then "done"
    for start in callees:   # depth first, without recursion: a chain of thousands of functions is valid
        if start in state:
            continue
        path, stack = [start], [iter(callees[start])]
        state[start] = "open"
        while stack:
            callee = next(stack[-1], None)
            if callee is None:
                state[path.pop()] = "done"
                stack.pop()
            elif state.get(callee) == "open":
                cycle = path[path.index(callee):] + [callee]
                raise InvalidModelError("model-local functions call each other in a cycle: "
                                        + " -> ".join(shown(function) for function in cycle))
            elif callee not in state:
                state[callee] = "open"
                path.append(callee)
                stack.append(iter(callees.get(callee, [])))


def _check_text(message) -> None:
    """Every string field (names, op types, domains, dim names) is UTF-8 text: proto2 keeps one that
    is not as bytes, on which the passes and onnx's exporter fail. Bytes fields (raw data) are skipped."""
    for field, value in message.ListFields():
        if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == FieldDescriptor.LABEL_REPEATED
        for item in (value if repeated else (value,)):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                _check_text(item)
            elif isinstance(item, bytes):
                raise InvalidModelError(f"a {message.DESCRIPTOR.name}'s {field.name} holds bytes that are not UTF-8 "
                                        f"text: {printable(repr(item[:60]))}")


# Stored tensors onnx-graphsurgeon cannot write back: it holds 4-bit values one a byte and strings as
# Python objects, and exported both as raw data, failing (exit 1) on every initializer and on a
# Constant that a pass folds into one.
UNCARRIED_TENSOR_TYPES = FOUR_BIT_TYPES | {onnx.TensorProto.STRING}
_DEFINED_TENSOR_TYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def _check_tensor_type(tensor: onnx.TensorProto) -> None:
    if tensor.data_type not in _DEFINED_TENSOR_TYPES:   # adv13: 999 was a KeyError, 0 onnx-graphsurgeon's, exit 1
        raise InvalidModelError(f"tensor '{printable(tensor.name)}' is of data type {tensor.data_type}, "
                                f"{'UNDEFINED' if tensor.data_type == 0 else 'which ONNX does not define'}")
    if tensor.data_type in UNCARRIED_TENSOR_TYPES:
        kind = onnx.TensorProto.DataType.Name(tensor.data_type)
        raise InvalidModelError(f"tensor '{printable(tensor.name)}' is {kind}: stored tensors of 4-bit types and "
                                "strings are not supported")


def _check_tensor_size(tensor: onnx.TensorProto) -> None:
    if any(dim < 0 for dim in tensor.dims):   # (-2, -2) holding 4 values passed the count below (adv13)
        raise InvalidModelError(f"tensor '{printable(tensor.name)}' declares dims {list(tensor.dims)}: a size is 0 or more")
    if uses_external_data(tensor):   # still a file reference: graph_io checks its byte range when it reads it
        return
    elements = 1
    for dim in tensor.dims:
        elements *= dim
    if tensor.raw_data:
        held, wanted, unit = len(tensor.raw_data), tensor_byte_size(tensor), "bytes"
    else:
        try:
            field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
        except Exception:   # an unknown type: the checker and ONNX Runtime refuse it
            return
        held, unit = len(getattr(tensor, field)), "values"
        if tensor.data_type in FOUR_BIT_TYPES:
            wanted = (elements + 1) // 2
        elif tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            wanted = 2 * elements
        else:
            wanted = elements
    if wanted is not None and held != wanted:
        raise InvalidModelError(f"tensor '{printable(tensor.name)}' declares dims {list(tensor.dims)} "
                                f"({wanted:,} {unit}) but holds {held:,}")


def _subgraphs(node: onnx.NodeProto):
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.name, attribute.g
        for subgraph in attribute.graphs:
            yield attribute.name, subgraph


def _outer_names_read(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph (or its own subgraphs) read that it does not define itself."""
    defined = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer}
    defined |= {sparse.values.name for sparse in graph.sparse_initializer}
    read: set[str] = set()
    for node in graph.node:
        read.update(name for name in node.input if name)
        for _, subgraph in _subgraphs(node):
            read |= _outer_names_read(subgraph)
        defined.update(name for name in node.output if name)
    return read - defined


def _check_graph(graph: onnx.GraphProto, *, outer: frozenset, opsets: dict[str, int],
                 functions: set, where: str, context) -> None:
    defined: dict[str, str] = {}
    for value in graph.input:
        if value.name in defined:
            raise InvalidModelError(f"input name '{printable(value.name)}' is listed twice in {where}")
        defined[value.name] = "a graph input"
    initializers: set[str] = set()
    for tensor in list(graph.initializer) + [sparse.values for sparse in graph.sparse_initializer]:
        # Two values under one name: ONNX Runtime and onnx-graphsurgeon would each take another one.
        if tensor.name in initializers:
            raise InvalidModelError(f"initializer '{printable(tensor.name)}' is defined twice in {where}")
        initializers.add(tensor.name)
        defined.setdefault(tensor.name, "an initializer")   # an initializer may also be listed as an input
    producer: dict[str, int] = {}
    named: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.name in named and not where.startswith("model-local function"):   # ONNX Runtime refuses it ('two
            # nodes with same node name'), --verify none wrote it; a function's body is renamed where it is inlined
            raise InvalidModelError(f"node name '{printable(node.name)}' is given to two nodes in {where}")
        if node.name:
            named.add(node.name)
        domain = _CHECKED_DOMAINS.get(node.domain)
        if domain is not None and (node.domain, node.op_type) not in functions:
            if domain not in opsets:
                raise InvalidModelError(f"{_node_label(node)} in {where} uses domain '{printable(node.domain)}', "
                                        "which the model does not import")
            if not _op_exists(node.op_type, opsets[domain], domain):
                raise InvalidModelError(f"{_node_label(node)} in {where}: no op '{printable(node.op_type)}' in "
                                        f"opset {opsets[domain]} of domain '{printable(node.domain or 'ai.onnx')}'")
            _check_node_schema(node, context, where)
        for name in node.output:
            if not name:
                continue
            if name in producer or name in defined or name in outer:   # outer: onnx.checker's SSA across scopes
                first = (_node_label(graph.node[producer[name]]) if name in producer else defined[name]
                         if name in defined else "the outer graph")
                raise InvalidModelError(f"tensor '{printable(name)}' in {where} is produced twice: by {first} and "
                                        f"by {_node_label(node)}")
            producer[name] = index
    seen_outputs: set[str] = set()
    for value in graph.output:
        if value.name in seen_outputs:
            raise InvalidModelError(f"output name '{printable(value.name)}' is listed twice in {where}")
        seen_outputs.add(value.name)
        if value.name not in producer and value.name not in defined:
            if value.name in outer:   # onnx.checker and ONNX Runtime refuse it; a pass would export it so
                raise InvalidModelError(f"output '{printable(value.name)}' of {where} is a value of the outer graph "
                                        "returned directly (an Identity must come between)")
            raise InvalidModelError(f"output '{printable(value.name)}' of {where} is produced by nothing")

    # Kahn's algorithm over "node j reads what node i produces"; a subgraph's reads count for its node.
    in_scope = outer | set(defined) | set(producer)
    readers: dict[int, list[int]] = {}
    waiting = [0] * len(graph.node)
    node_reads: list[set[str]] = []
    late_read = None   # reported after the cycle check: a cycle through a subgraph's read is the graver fault
    for index, node in enumerate(graph.node):
        reads = {name for name in node.input if name}
        node_reads.append(reads)
        for attribute_name, subgraph in _subgraphs(node):
            _check_graph(subgraph, outer=frozenset(in_scope), opsets=opsets, functions=functions,
                         where=f"subgraph '{printable(attribute_name)}' of {_node_label(node)}", context=context)
            for name in _outer_names_read(subgraph):
                # onnx-graphsurgeon imports a subgraph's outer name before a later node makes it as a second, unlinked
                # tensor of that name: a pass then wrote the body's read apart from its producer (adv15: exit 3
                # blaming unroll-loops); onnx.checker refuses it too
                if producer.get(name, -1) > index and late_read is None:
                    late_read = (f"subgraph '{printable(attribute_name)}' of {_node_label(node)} in {where} reads "
                                 f"'{printable(name)}', which {_node_label(graph.node[producer[name]])} computes "
                                 "after it (nodes must be topologically sorted)")
                reads.add(name)
        for name in reads:
            if name not in in_scope:
                raise InvalidModelError(f"{_node_label(node)} in {where} reads '{printable(name)}', which nothing produces")
            if name in producer:
                readers.setdefault(producer[name], []).append(index)
                waiting[index] += 1
    ready = [index for index, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        index = ready.pop()
        done += 1
        for reader in readers.get(index, ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    if done < len(graph.node):
        raise InvalidModelError(f"{where} has a cycle through {_node_label(graph.node[_on_cycle(node_reads, producer, waiting)])}")
    if late_read is not None:
        raise InvalidModelError(late_read)


def _on_cycle(node_reads: list[set[str]], producer: dict[str, int], waiting: list[int]) -> int:
    """A node on a cycle: walk back from any node Kahn's algorithm left waiting, through producers
    that are also left waiting, until a node repeats."""
    index = next(i for i, count in enumerate(waiting) if count > 0)
    visited: set[int] = set()
    while index not in visited:
        visited.add(index)
        index = next(producer[name] for name in sorted(node_reads[index])
                     if name in producer and waiting[producer[name]] > 0)
    return index
