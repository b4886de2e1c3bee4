"""The region diff as plain text (``tools.diffview --text``): one block per group of rewrites."""
from __future__ import annotations

from typing import Any, Mapping

from passes.one_line import printable, printable_message


def format_delta(delta: Mapping[str, int], limit: int | None = None) -> str:
    """"-8,918 Gather, +372 CumSum", biggest change first."""
    items = sorted(((op, n) for op, n in delta.items() if n), key=lambda kv: (-abs(kv[1]), kv[0]))
    shown = items if limit is None else items[:limit]
    text = ", ".join(f"{n:+,} {op}" for op, n in shown)
    if limit is not None and len(items) > limit:
        text += f", … {len(items) - limit} more"
    return text or "no change"


def group_kind(group: Mapping[str, Any]) -> str:
    if group["removed_nodes"] and group["added_nodes"]:
        return "changed"
    return "removed" if group["removed_nodes"] else "added"


def _net_ops(group: Mapping[str, Any]) -> dict[str, int]:
    net = {op: -count for op, count in group["removed_ops"].items()}
    for op, count in group["added_ops"].items():
        net[op] = net.get(op, 0) + count
    return net


def _lines(lines: list[list[str]], marker: str) -> list[str]:
    # Context lines are indented one more step so the region itself stands out.
    return [f"  {marker} {'  ' if kind == 'context' else ''}{printable_message(text)}" for kind, text, _ in lines]


def regions_text(description: Mapping[str, Any], before_label: str = "before", after_label: str = "after") -> str:
    out = []
    for number, group in enumerate(description["groups"], start=1):
        instance = group["instances"][0]
        count = group["count"]
        multiplicity = f"x{count:,} identical, showing 1" if count > 1 else "1 rewrite"
        # Op types, names and attribute values come from the model: each line is escaped to stay one line.
        out.append(printable_message(f"== group {number}: {multiplicity} ({group_kind(group)}): {format_delta(_net_ops(group), 8)}"))
        out.append(f"   at {printable(instance['anchor'])}")
        out.append(f"  --- {before_label}: {_nodes(group['removed_nodes'])}")
        out += _lines(instance["before"], "-")
        out.append(f"  +++ {after_label}: {_nodes(group['added_nodes'])}")
        out += _lines(instance["after"], "+")
        out.append("")
    hidden = description.get("hidden_groups") or {}
    if hidden.get("groups"):
        out.append(printable_message(f"+ {hidden['groups']:,} more groups ({hidden['regions']:,} rewrites) not shown: "
                             f"{format_delta(hidden.get('ops_delta', {}), 12)}"))
    return "\n".join(out)


def _nodes(count: int) -> str:
    return f"{count:,} node{'' if count == 1 else 's'}"
