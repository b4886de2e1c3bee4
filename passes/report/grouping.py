"""Group a pass's regions into identical rewrites ("x60 identical, showing 1").

Two regions are identical when their canonical prints (``canonical.print_region``, context
left out) are equal. Groups are listed by size, largest first. The report keeps the printed
instances of each group up to a cap so that one can page through them; the rest are counted.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from passes.report.canonical import print_region
from passes.report.regions import SnapshotDiff

# A pass that folds 8,000 tiny subgraphs must not make a 100 MB page.
MAX_GROUPS = 80
MAX_INSTANCES_PER_GROUP = 40


def _sorted_ops(histogram: dict[str, int]) -> dict[str, int]:
    return dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0])))


def describe_regions(diff: SnapshotDiff, max_groups: int = MAX_GROUPS,
                     max_instances: int = MAX_INSTANCES_PER_GROUP) -> dict[str, Any]:
    """JSON-ready description of one pass's rewrites, grouped."""
    groups: dict[str, dict[str, Any]] = {}
    for region in diff.regions:
        printed = print_region(diff, region)
        group = groups.get(printed.identity)
        if group is None:
            group = groups[printed.identity] = {
                "count": 0,
                "removed_nodes": len(region.removed), "added_nodes": len(region.added),
                "removed_ops": _sorted_ops(printed.removed_ops), "added_ops": _sorted_ops(printed.added_ops),
                "instances": [],
            }
        group["count"] += 1
        if len(group["instances"]) < max_instances:
            group["instances"].append({"anchor": printed.anchor, "before": printed.before, "after": printed.after})
    ordered = sorted(groups.values(), key=lambda group: -group["count"])  # stable: first seen first
    hidden = ordered[max_groups:]
    hidden_ops = Counter()
    for group in hidden:
        for op, count in group["removed_ops"].items():
            hidden_ops[op] -= count * group["count"]
        for op, count in group["added_ops"].items():
            hidden_ops[op] += count * group["count"]
    return {
        "regions": len(diff.regions),
        "removed_nodes": len(diff.removed),
        "added_nodes": len(diff.added),
        "groups_total": len(ordered),
        "groups": ordered[:max_groups],
        "hidden_groups": {"groups": len(hidden), "regions": sum(g["count"] for g in hidden),
                          "ops_delta": {op: n for op, n in sorted(hidden_ops.items()) if n}},
    }


def regions_summary(description: dict[str, Any]) -> dict[str, Any]:
    """The part of a region description that goes into report.json (no printed text)."""
    return {
        "regions": description["regions"],
        "removed_nodes": description["removed_nodes"],
        "added_nodes": description["added_nodes"],
        "groups": [{"count": group["count"], "removed_ops": group["removed_ops"], "added_ops": group["added_ops"]}
                   for group in description["groups"]],
        "groups_total": description["groups_total"],
    }
