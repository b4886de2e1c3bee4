"""Which pass made each node: a side table filled during the run, stamped on export.

onnx-graphsurgeon nodes carry no metadata, so the table is keyed by something that survives
export: the node name, or for an unnamed node its first output (unique in a valid graph).
On export each node the run touched gets ``metadata_props`` (ONNX >= 1.16, NodeProto field
16) ``pass`` = the pass name and ``pass_index`` = its 1-based position in the pipeline (the
"#" column of the report), so that Netron and Model Explorer show where a node came from.
"pass" names the last pass that created or rewired the node; nodes of the input model that
no pass touched keep whatever they had.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

PASS_KEY = "pass"
PASS_INDEX_KEY = "pass_index"


def provenance_key(name: str, outputs) -> str:
    if name:
        return name
    first = next((output for output in outputs if output), "")
    return f"output:{first}"


@dataclass(frozen=True)
class Origin:
    pass_name: str
    pass_index: int  # 1-based


def stamp_provenance(model: onnx.ModelProto, origins: dict[str, Origin]) -> int:
    """Set node metadata ``pass``/``pass_index`` from ``origins``; returns how many nodes were stamped."""
    stamped = 0
    for node in model.graph.node:
        origin = origins.get(provenance_key(node.name, node.output))
        if origin is None:
            continue
        kept = [(p.key, p.value) for p in node.metadata_props if p.key not in (PASS_KEY, PASS_INDEX_KEY)]
        del node.metadata_props[:]
        for key, value in kept + [(PASS_KEY, origin.pass_name), (PASS_INDEX_KEY, str(origin.pass_index))]:
            node.metadata_props.add(key=key, value=value)
        stamped += 1
    return stamped


def read_provenance(model: onnx.ModelProto) -> dict[str, dict[str, str]]:
    """Node name -> its ``pass``/``pass_index`` metadata (for tests and tools)."""
    found = {}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props if p.key in (PASS_KEY, PASS_INDEX_KEY)}
        if props:
            found[provenance_key(node.name, node.output)] = props
    return found
