"""Which nodes a pass removed and added, grouped into connected rewrites ("regions").

removed = nodes of the snapshot before whose key is not in the snapshot after; added = the
reverse (keys: ``NodeRecord.key``, name + op + inputs + outputs). One region is one rewrite:
the removed nodes that are connected to each other by data edges, together with the added
nodes that replaced them.

Connections (weakly connected components by union-find over removed and added nodes, one
pass over each node list; a plain list-based union-find, 3x faster than networkx's here):
  * producer -> consumer edges inside the removed nodes, and inside the added nodes
    (weakly connected components), except that a node without variable inputs (Constant)
    bridges nothing: it joins its first reader's region;
  * a removed and an added node that produce a tensor of the same name: passes keep the
    name of a value they replace, so that consumers downstream need not change;
  * an added component still without a removed partner is paired with the removed nodes
    that consumed one of its (non-constant) inputs. This fallback is not used for
    components already paired by the rules above: two scans that read the same activation
    must not merge into one region.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from passes.report.snapshot import GraphSnapshot


@dataclass
class Region:
    """One rewrite: indices into ``before.nodes`` (removed) and ``after.nodes`` (added)."""

    removed: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)


@dataclass
class SnapshotDiff:
    before: GraphSnapshot
    after: GraphSnapshot
    removed: list[int]
    added: list[int]
    regions: list[Region]


class _DisjointSets:
    """Union-find over 0..size-1 with path halving (no ranks: the sets here are shallow)."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[root_b] = root_a


def changed_nodes(before: GraphSnapshot, after: GraphSnapshot) -> tuple[list[int], list[int]]:
    """(removed indices into before.nodes, added indices into after.nodes).

    Nodes pair up by key; a pair whose attributes differ counts as removed + added.
    """
    unmatched_before: dict[tuple, list[int]] = {}
    for index, node in enumerate(before.nodes):
        unmatched_before.setdefault(node.key, []).append(index)
    kept: set[int] = set()
    added = []
    for index, node in enumerate(after.nodes):
        candidates = unmatched_before.get(node.key)
        if candidates and before.nodes[candidates[0]].same_attributes(node):
            kept.add(candidates.pop(0))
        else:
            added.append(index)
    removed = [index for index in range(len(before.nodes)) if index not in kept]
    return removed, added


def _link_producers_and_consumers(components: _DisjointSets, snapshot: GraphSnapshot, indices: list[int],
                                  offset: int) -> dict[str, int]:
    """Union each node with the in-set producers of its inputs; returns tensor -> in-set producer.

    Node ``index`` is element ``offset + index`` of ``components``. A source node (no
    variable inputs: Constant, and the like) joins the region of its first reader only. The
    TorchScript exporter shares one Constant node between all blocks that use the same
    number; as a bridge it would merge every rewrite of the model into one region.
    """
    nodes = snapshot.nodes
    produced_by = {name: index for index in indices for name in nodes[index].outputs if name}
    attached_sources: set[int] = set()
    is_source = {index: _is_source(nodes[index]) for index in set(produced_by.values())}
    for index in indices:
        for name in nodes[index].inputs:
            producer = produced_by.get(name)
            if producer is None:
                continue
            if is_source[producer]:
                if producer in attached_sources:
                    continue
                attached_sources.add(producer)
            components.union(offset + index, offset + producer)
    return produced_by


def _is_source(node) -> bool:
    return all(not name or position in node.constant_texts for position, name in enumerate(node.inputs))


def diff_snapshots(before: GraphSnapshot, after: GraphSnapshot,
                   changed: tuple[list[int], list[int]] | None = None) -> SnapshotDiff:
    """Regions of change; ``changed`` is ``changed_nodes(before, after)`` if already known."""
    removed, added = changed if changed is not None else changed_nodes(before, after)
    offset = len(before.nodes)  # element of added node j: offset + j
    components = _DisjointSets(len(before.nodes) + len(after.nodes))
    removed_producer = _link_producers_and_consumers(components, before, removed, 0)
    added_producer = _link_producers_and_consumers(components, after, added, offset)

    # A replacement keeps the name of the value it replaces.
    for name, added_index in added_producer.items():
        removed_index = removed_producer.get(name)
        if removed_index is not None:
            components.union(offset + added_index, removed_index)

    # Added components that found no removed partner: look at what they read.
    has_removed = {components.find(index) for index in removed}
    unpaired: dict[int, list[int]] = {}
    for index in added:
        root = components.find(offset + index)
        if root not in has_removed:
            unpaired.setdefault(root, []).append(index)
    if unpaired:
        removed_set = set(removed)
        before_consumers = before.consumer_indices()
        for root, members in unpaired.items():
            partner = _removed_reader_of_inputs(members, after, added_producer, before_consumers, removed_set)
            if partner is not None:
                components.union(partner, root)

    regions: dict[int, Region] = {}
    for index in removed:
        regions.setdefault(components.find(index), Region()).removed.append(index)
    for index in added:
        regions.setdefault(components.find(offset + index), Region()).added.append(index)
    ordered = sorted(regions.values(), key=lambda region: (region.removed[:1] or [len(before.nodes)],
                                                             region.added[:1]))
    return SnapshotDiff(before, after, removed, added, ordered)


def _removed_reader_of_inputs(members: list[int], after: GraphSnapshot, added_producer: dict[str, int],
                              before_consumers: dict[str, list[int]], removed_set: set[int]) -> int | None:
    for index in members:
        node = after.nodes[index]
        for position, name in enumerate(node.inputs):
            if not name or position in node.constant_texts or name in added_producer:
                continue
            for reader in before_consumers.get(name, ()):
                if reader in removed_set:
                    return reader
    return None
