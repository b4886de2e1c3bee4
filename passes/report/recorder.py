"""Watches a pass-manager run: which nodes each pass changed, as regions and as provenance.

The manager calls ``pipeline_started(graph)`` once and ``pass_finished(index, record, graph)``
after every pass. Only passes that changed the graph cost anything: one snapshot of the
graph after them (the snapshot after one pass is the "before" of the next), a diff, and with
``regions=True`` the grouped canonical prints for the HTML report.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from typing import Any, Iterator

import onnx
import onnx_graphsurgeon as gs

from passes.report.grouping import describe_regions
from passes.report.provenance import Origin, provenance_key, stamp_provenance
from passes.report.regions import changed_nodes, diff_snapshots
from passes.report.snapshot import GraphSnapshot, snapshot_graph


@contextmanager
def _timed_without_gc(recorder: "PassRecorder") -> Iterator[None]:
    """Pause the cyclic GC: snapshots allocate ~10 tuples per node, and on a 77k-node graph
    the collections this triggers (scanning the whole graph's objects) took 3x the work."""
    was_enabled = gc.isenabled()
    gc.disable()
    started = time.perf_counter()
    try:
        yield
    finally:
        recorder.seconds += time.perf_counter() - started
        if was_enabled:
            gc.enable()


class PassRecorder:
    def __init__(self, regions: bool = True) -> None:
        self.regions = regions
        # provenance key -> the pass that last created or rewired that node
        self.origins: dict[str, Origin] = {}
        # pass index (0-based) -> describe_regions() of that pass, for changed passes
        self.region_descriptions: dict[int, dict[str, Any]] = {}
        self.seconds = 0.0  # time spent here, reported so that the cost stays visible
        self._snapshot: GraphSnapshot | None = None

    def pipeline_started(self, graph: gs.Graph) -> None:
        with _timed_without_gc(self):
            self._snapshot = snapshot_graph(graph)

    def pass_finished(self, index: int, record, graph: gs.Graph) -> None:
        if not record.changed or self._snapshot is None:
            return
        with _timed_without_gc(self):
            after = snapshot_graph(graph)
            removed, added = changed_nodes(self._snapshot, after)
            origin = Origin(record.name, index + 1)
            for node_index in added:
                node = after.nodes[node_index]
                self.origins[provenance_key(node.name, node.outputs)] = origin
            if self.regions:
                diff = diff_snapshots(self._snapshot, after, (removed, added))
                self.region_descriptions[index] = describe_regions(diff)
            self._snapshot = after

    def stamp(self, model: onnx.ModelProto) -> int:
        """Write provenance into an exported model's node metadata."""
        return stamp_provenance(model, self.origins)
