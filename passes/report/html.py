"""index.html: the report as one self-contained page (inline CSS, SVG and a little JS).

Everything is rendered here, in Python, so the page reads fine with scripts off; the only
script pages through the instances of a group of identical rewrites, from a JSON island.
No request leaves the page (the favicon is a data: URL), so it opens from a file:// path,
offline, and a headless browser shows no console errors (tests/test_report_html.py).
"""
from __future__ import annotations

import json
import html
from pathlib import Path
from typing import Any, Mapping

from passes.one_line import printable_message
from passes.report.chart import ChartPoint, node_count_svg

ASSETS = Path(__file__).with_name("assets")
CHIPS_SHOWN = 6  # op-delta chips in a table row before "+N more"
GROUPS_OPEN = 6  # groups of a pass shown unfolded; later ones start folded


def escape(text: str, quote: bool = True) -> str:
    """``text`` for the page: its control characters and bidi overrides written as escapes (``printable``,
    as on a terminal: a name's RLO would show the rest of a note reversed, an ESC or a NUL hides in
    it), then HTML-escaped. Every text the page shows goes through here; names come from the model."""
    return html.escape(printable_message(text), quote)


def _printable_data(value: Any) -> Any:
    """``value`` (JSON data for the page's script, which shows it as text) with ``printable`` strings."""
    if isinstance(value, str):
        return printable_message(value)
    if isinstance(value, Mapping):
        return {key: _printable_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable_data(item) for item in value]
    return value


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _signed(value: int) -> str:
    return f"+{value:,}" if value > 0 else f"−{-value:,}" if value < 0 else "0"


def _chips(delta: Mapping[str, int], shown: int = CHIPS_SHOWN) -> str:
    """"−8,918 Gather" "+372 CumSum" chips, biggest change first."""
    items = sorted(delta.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    chips = [f'<span class="chip {"plus" if count > 0 else "minus"}">{_signed(count)} {escape(op)}</span>'
             for op, count in items if count]
    if len(chips) <= shown:
        return "".join(chips)
    return ("".join(chips[:shown]) + f'<details class="more-chips"><summary>+{len(chips) - shown} more</summary>'
            + "".join(chips[shown:]) + "</details>")


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 60 else f"{value / 60:.1f} min"


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else escape(str(value))


def _check_cell(entry: Mapping[str, Any]) -> str:
    checker, shapes = entry.get("checker", "off"), entry.get("shape_inference", "off")
    title = escape(f"onnx.checker: {checker}") + "&#10;" + escape(f"shape inference: {shapes}")   # two lines
    if checker.startswith("error") or shapes.startswith("error"):
        return f'<span class="check error" title="{title}">error</span>'
    if checker == "ok" and shapes == "ok":
        return f'<span class="check ok" title="{title}">ok</span>'
    return f'<span title="{title}">–</span>'


def _verify_cell(verification: Mapping[str, Any] | None) -> str:
    if not verification:
        return "–"
    css = "ok" if verification.get("ok") else "error"
    title = escape(f"max abs {_number(verification.get('max_abs'))}, tolerance {verification.get('tolerance')}")
    return f'<span class="check {css}" title="{title}">{_number(verification.get("rel_l2"))}</span>'


def _stats(stats: Mapping[str, Any]) -> str:
    return " ".join(f"{escape(str(key))}={escape(str(value))}" for key, value in stats.items())


def _header(report: Mapping[str, Any]) -> str:
    status = report.get("status", "?")
    css = "ok" if status == "ok" else "failed"
    nodes = report.get("nodes", {})
    totals = report.get("totals", {})
    headline = []
    if "input" in nodes:
        headline.append(f"{nodes['input']:,} → {nodes['output']:,} nodes" if "output" in nodes
                        else f"{nodes['input']:,} nodes in")
    if totals.get("rerolled_scans"):
        headline.append(f"{totals['rerolled_scans']} scans re-rolled")
    if "total_seconds" in report:
        headline.append(f"{report['total_seconds']:.1f} s")
    verification = report.get("verification")
    if verification and "rel_l2" in verification:
        mark = "✓" if verification.get("ok") else "✗"
        headline.append(f"verified {mark} rel L2 {_number(verification['rel_l2'])}, max abs "
                        f"{_number(verification['max_abs'])} (tolerance {verification.get('tolerance')})")
    elif report.get("verify_mode") == "none":
        headline.append("not verified")
    facts = [("pipeline", f"<code>{escape(str(report.get('pipeline', '')))}</code>"),
             ("input", escape(str(report.get("input", "")))),
             ("output", escape(str(report.get("output", "")))
              + ("" if status == "ok" else ' <span class="muted">(not written)</span>'))]
    if report.get("reference"):
        facts.append(("reference", escape(str(report["reference"]))))
    if report.get("error"):
        facts.append(("error", f'<span class="check error">{escape(str(report["error"]))}</span>'))
    rows = "".join(f"<dt>{key}</dt><dd>{value}</dd>" for key, value in facts)
    title = escape(str(report.get("pipeline_name", "pipeline")))
    return (f'<h1>{title} pipeline<span class="status {css}">{escape(status)}</span></h1>'
            f'<p class="headline">{" · ".join(headline)}</p><dl class="facts">{rows}</dl>')


def _chart(report: Mapping[str, Any]) -> str:
    run = report.get("run")
    if not run:
        return ""
    points = [ChartPoint("input", run["nodes_before"], True)]
    points += [ChartPoint(entry["name"], entry["nodes_after"], entry["changed"]) for entry in run["passes"]]
    return "<h2>Node count through the pipeline</h2>" + node_count_svg(points)


def _pass_rows(run: Mapping[str, Any], with_regions: set[int]) -> str:
    rows = []
    for entry in run["passes"]:
        index = entry["index"]
        delta = entry["nodes_after"] - entry["nodes_before"]
        delta_css = "plus" if delta > 0 else "minus" if delta < 0 else ""
        options = ", ".join(f"{key}={value}" for key, value in entry.get("options", {}).items())
        notes = entry.get("notes") or []
        notes_html = ""
        if notes:
            items = "".join(f"<li>{escape(str(note))}</li>" for note in notes[:50])
            more = f"<li>… {len(notes) - 50} more</li>" if len(notes) > 50 else ""
            notes_html = f'<details class="notes"><summary>{len(notes)} note{"s" if len(notes) > 1 else ""}</summary><ul>{items}{more}</ul></details>'
        link = f' <a href="#pass-{index}">diff ↓</a>' if index - 1 in with_regions else ""
        time_total = entry["seconds"] + entry.get("check_seconds", 0) + entry.get("verify_seconds", 0)
        time_title = escape(f"pass {entry['seconds']:.3f} s, checks {entry.get('check_seconds', 0):.3f} s, "
                            f"verify {entry.get('verify_seconds', 0):.3f} s")
        rows.append(
            f'<tr class="{"changed" if entry["changed"] else "unchanged"}" id="row-{index}">'
            f'<td class="num">{index}</td>'
            f'<td><b>{escape(entry["name"])}</b>{link}'
            + (f'<div class="options">{escape(options)}</div>' if options else "") + notes_html + "</td>"
            f'<td class="num" title="{time_title}">{_seconds(time_total)}</td>'
            f'<td class="num">{entry["nodes_before"]:,} → {entry["nodes_after"]:,}'
            f'<div class="delta {delta_css}">{_signed(delta) if entry["changed"] else "unchanged"}</div></td>'
            f'<td>{_chips(entry.get("ops_delta", {}))}</td>'
            f'<td class="stats">{_stats(entry.get("stats", {}))}</td>'
            f"<td>{_check_cell(entry)}</td><td>{_verify_cell(entry.get('verification'))}</td></tr>")
    return "".join(rows)


def _pass_table(report: Mapping[str, Any], with_regions: set[int]) -> str:
    run = report.get("run")
    if not run or not run.get("passes"):
        return "<h2>Passes</h2><p class='muted'>No pass ran.</p>"
    head = ("<tr><th>#</th><th>pass</th><th>time</th><th>nodes</th><th>op changes</th>"
            "<th>rewrites</th><th>checks</th><th>rel L2 vs before</th></tr>")
    return f'<h2>Passes</h2><table class="passes"><thead>{head}</thead><tbody>{_pass_rows(run, with_regions)}</tbody></table>'


def _lines_html(lines: list[list[str]]) -> str:
    return "".join(f'<span class="{escape(kind)}"' + (f' title="{escape(original)}"' if original else "")
                   + f">{escape(text)}</span>\n" for kind, text, original in lines)


def _group_html(pass_index: int, group_index: int, group: Mapping[str, Any]) -> str:
    instances = group["instances"]
    first = instances[0]
    count = group["count"]
    if count > 1:
        label = f'<span class="count">×{count:,} identical</span>'
    else:
        label = '<span class="count">1 rewrite</span>'
    chips = _chips({**{op: -n for op, n in group["removed_ops"].items()},
                    **{op: group["added_ops"].get(op, 0) - group["removed_ops"].get(op, 0)
                       for op in group["added_ops"]}}, shown=8)
    pager = ""
    if len(instances) > 1:
        stored = f" (paging through the first {len(instances)})" if len(instances) < count else ""
        pager = (f'<div class="pager"><button class="prev" type="button" aria-label="previous">◀</button>'
                 f'<span>showing <span class="position">1</span> of {len(instances):,}{stored}</span>'
                 f'<button class="next" type="button" aria-label="next">▶</button></div>')
    elif count > 1:
        pager = f'<div class="pager"><span>showing 1 of {count:,}</span></div>'
    opened = " open" if group_index < GROUPS_OPEN else ""
    return (f'<details class="group" data-pass="{pass_index}" data-group="{group_index}" data-position="0"{opened}>'
            f'<summary>{label}{chips} <span class="anchor mono">{escape(first["anchor"])}</span></summary>{pager}'
            f'<div class="panes"><div class="pane before"><div class="pane-title">before · '
            f'{group["removed_nodes"]:,} node{"s" if group["removed_nodes"] != 1 else ""} removed</div>'
            f'<pre>{_lines_html(first["before"])}</pre></div>'
            f'<div class="pane after"><div class="pane-title">after · '
            f'{group["added_nodes"]:,} node{"s" if group["added_nodes"] != 1 else ""} added</div>'
            f'<pre>{_lines_html(first["after"])}</pre></div></div></details>')


def _region_sections(report: Mapping[str, Any], descriptions: Mapping[int, Mapping[str, Any]],
                     heading: bool = True) -> str:
    run = report.get("run")
    if not run or not descriptions:
        return ""
    title = "What each pass changed" if heading else "Regions"
    subject = "a pass removed (left) beside the nodes it added" if heading else "only in the first model (left) beside the nodes only in the second"
    sections = [f'<h2>{title}</h2><p class="muted">Each rewrite: the nodes {subject} '
                '(right), with canonical names: <code>%inN</code> values '
                'read from outside, <code>%outN</code> values given to the rest of the graph, '
                '<code>%N</code> values inside. Grey lines are context (<code>←</code> producer, '
                '<code>→</code> consumers). Hover a line for the node\'s name in the model.</p>']
    for index, entry in enumerate(run["passes"]):
        description = descriptions.get(index)
        if description is None:
            continue
        groups = description["groups"]
        summary = (f'{description["regions"]:,} rewrite{"s" if description["regions"] != 1 else ""} in '
                   f'{description["groups_total"]:,} group{"s" if description["groups_total"] != 1 else ""} · '
                   f'−{description["removed_nodes"]:,} / +{description["added_nodes"]:,} nodes')
        title = (f'{index + 1} · {escape(entry["name"])} <small>{summary}</small> <a href="#row-{index + 1}">↑</a>'
                 if heading else f"<small>{summary}</small>")
        parts = [f'<section class="pass-diff" id="pass-{index + 1}"><h3>{title}</h3>']
        parts += [_group_html(index, group_index, group) for group_index, group in enumerate(groups)]
        hidden = description.get("hidden_groups", {})
        if hidden.get("groups"):
            parts.append(f'<p class="hidden-groups">+ {hidden["groups"]:,} more groups ({hidden["regions"]:,} rewrites) '
                         f'not shown: {_chips(hidden.get("ops_delta", {}), shown=12)}</p>')
        if not groups:
            parts.append('<p class="muted">The pass reported a change, but no node differs by name, op, '
                         'inputs, outputs or attributes.</p>')
        parts.append("</section>")
        sections.append("".join(parts))
    return "".join(sections)


def _verification_section(report: Mapping[str, Any]) -> str:
    verification = report.get("verification")
    if not verification:
        return ""
    if "outputs" not in verification:
        return f'<h2>Final verification</h2><p class="check error">{escape(str(verification.get("error", "failed")))}</p>'
    rows = "".join(
        f"<tr><td><code>{escape(str(o['name']))}</code></td><td>{_number(o['max_abs'])}</td>"
        f"<td>{_number(o['rel_l2'])}</td><td>{_number(o['tolerance'])}</td>"
        f"<td class=\"check {'ok' if o['ok'] else 'error'}\">{'pass' if o['ok'] else 'FAIL'}"
        f"{' · ' + escape(o['problem']) if o.get('problem') else ''}</td></tr>"
        for o in verification["outputs"])
    against = escape(str(verification.get("against", "")))
    return (f'<h2>Final verification</h2><p class="muted">against {against}</p><table class="outputs">'
            "<tr><th>output</th><th>max abs</th><th>rel L2</th><th>tolerance</th><th></th></tr>"
            f"{rows}</table>")


def _region_data(descriptions: Mapping[int, Mapping[str, Any]]) -> str:
    data = {str(index): [_printable_data(group["instances"]) for group in description["groups"]]
            for index, description in descriptions.items()}
    # Inside <script> the HTML parser still acts on "</script" and on "<!--" (which can swallow
    # the page's own script after it), so no "<" may appear raw: JSON spells it \u003c.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def _page(title: str, body: str, descriptions: Mapping[int, Mapping[str, Any]], footer: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{_asset('report.css')}</style></head><body>"
        + body + f"<footer>{footer}</footer>"
        + f'<script type="application/json" id="region-data">{_region_data(descriptions)}</script>'
        + f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def render_html(report: Mapping[str, Any], descriptions: Mapping[int, Mapping[str, Any]]) -> str:
    """The page for one passes.apply run (``descriptions``: pass index -> describe_regions())."""
    body = (_header(report) + _chart(report) + _pass_table(report, set(descriptions))
            + _region_sections(report, descriptions) + _verification_section(report))
    title = f"{report.get('pipeline_name', 'pipeline')} · {Path(str(report.get('input', ''))).name} · passes.apply report"
    footer = (f"passes.apply report · schema version {escape(str(report.get('schema_version', '?')))} · "
              "report.json beside this page has every number shown here.")
    return _page(title, body, descriptions, footer)


def render_diff_html(before_path: str, after_path: str, before_ops: Mapping[str, int], after_ops: Mapping[str, int],
                     description: Mapping[str, Any]) -> str:
    """The page of ``tools.diffview``: the region diff between any two models."""
    delta = {op: after_ops.get(op, 0) - before_ops.get(op, 0) for op in sorted(set(before_ops) | set(after_ops))}
    delta = {op: n for op, n in delta.items() if n}
    kinds = {"changed": 0, "removed": 0, "added": 0}
    for group in description["groups"]:
        kind = "changed" if group["removed_nodes"] and group["added_nodes"] else "removed" if group["removed_nodes"] else "added"
        kinds[kind] += group["count"]
    before_nodes, after_nodes = sum(before_ops.values()), sum(after_ops.values())
    facts = "".join(f"<dt>{label}</dt><dd>{escape(value)}</dd>" for label, value in
                    [("before", f"{before_path} ({before_nodes:,} nodes)"), ("after", f"{after_path} ({after_nodes:,} nodes)")])
    shown = "" if not description.get("hidden_groups", {}).get("groups") else " (counts of the groups shown)"
    headline = (f"{before_nodes:,} → {after_nodes:,} nodes · {description['regions']:,} regions: "
                f"{kinds['changed']:,} changed, {kinds['removed']:,} removed, {kinds['added']:,} added{shown}")
    body = (f'<h1>Model diff</h1><p class="headline">{escape(headline)}</p><dl class="facts">{facts}</dl>'
            f"<h2>Op histogram change</h2><p>{_chips(delta, shown=len(delta))}</p>")
    sections = {0: description}
    pseudo_report = {"run": {"passes": [{"name": "diff"}]}}
    body += _region_sections(pseudo_report, sections, heading=False)
    return _page(f"diff {Path(before_path).name} → {Path(after_path).name}", body, sections,
                 "tools.diffview · nodes match by name, op, inputs, outputs and attributes")
