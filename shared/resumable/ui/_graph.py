"""The step graph as server-rendered SVG: no client-side library, nothing to download.

Steps are laid out in layers from left to right (a step's layer is one more than its
deepest dependency), ordered within a layer by where their dependencies sit, so edges
mostly run straight. Each node carries its status as a class (colors and the animation of
running steps are in ``static/ui.css``) and links to the step's row below the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from resumable.ui._models import StepView

NODE_W = 150
NODE_H = 46
GAP_X = 40
GAP_Y = 18
PAD = 8
MAX_LABEL = 17


def layers(steps: Sequence[StepView], *, edges: bool = True) -> list[list[str]]:
    """Step names by layer (left to right); ``steps`` are in a topological order.

    Without ``edges`` (the graph is unknown), every step sits in one row of its own
    layer, in the order given.
    """
    names = [s.name for s in steps]
    if not edges:
        return [[n] for n in names]
    known = set(names)
    depth: dict[str, int] = {}
    for step in steps:
        deps = [d for d in step.dependencies if d in known]
        depth[step.name] = 1 + max((depth.get(d, 0) for d in deps), default=-1)
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    row: dict[str, float] = {}
    by_name = {s.name: s for s in steps}
    for column_index in range(len(columns)):
        members = [n for n in names if depth[n] == column_index]
        order = {n: i for i, n in enumerate(members)}

        def barycenter(name: str, order: dict[str, int] = order) -> tuple[float, int]:
            parents = [row[d] for d in by_name[name].dependencies if d in row]
            return (sum(parents) / len(parents) if parents else order[name], order[name])

        members.sort(key=barycenter)
        for i, name in enumerate(members):
            row[name] = i
        columns[column_index] = members
    return columns


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _detail(step: StepView) -> str:
    if step.items is not None:
        items = step.items
        text = f"{items.completed}/{items.total} items"
        return text + (f" · {items.failed} failed" if items.failed else "")
    text = step.status.replace("_", " ")
    if step.attempt > 1 or step.failures:
        text += f" · attempt {step.attempt}"
    return text


def render_svg(steps: Sequence[StepView], *, edges: bool = True) -> str:
    """The graph of ``steps`` (in graph order) as an inline ``<svg>`` element."""
    columns = layers(steps, edges=edges)
    if not edges and len(columns) > 1:
        # Unknown graph: a plain grid, four steps to a row, no edges.
        flat = [c[0] for c in columns]
        columns = [flat[i::4] for i in range(min(4, len(flat)))]
    position: dict[str, tuple[float, float]] = {}
    tallest = max((len(c) for c in columns), default=0)
    height = PAD * 2 + tallest * NODE_H + max(tallest - 1, 0) * GAP_Y
    width = PAD * 2 + len(columns) * NODE_W + max(len(columns) - 1, 0) * GAP_X
    for x_index, column in enumerate(columns):
        used = len(column) * NODE_H + (len(column) - 1) * GAP_Y
        top = PAD + (height - 2 * PAD - used) / 2
        for y_index, name in enumerate(column):
            position[name] = (PAD + x_index * (NODE_W + GAP_X), top + y_index * (NODE_H + GAP_Y))
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="step graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'class="arrowhead"/></marker></defs>',
    ]
    if edges:
        by_name = {s.name: s for s in steps}
        for step in steps:
            x2, y2 = position[step.name]
            for dep in step.dependencies:
                if dep not in position:
                    continue
                x1, y1 = position[dep]
                sx, sy = x1 + NODE_W, y1 + NODE_H / 2
                ex, ey = x2 - 2, y2 + NODE_H / 2
                bend = (ex - sx) / 2
                done = by_name[dep].status in ("completed", "skipped")
                parts.append(
                    f'<path class="edge{" done" if done else ""}" '
                    f'data-from="{escape(dep)}" data-to="{escape(step.name)}" '
                    f'd="M {sx:.1f} {sy:.1f} C {sx + bend:.1f} {sy:.1f}, {ex - bend:.1f} '
                    f'{ey:.1f}, {ex:.1f} {ey:.1f}" marker-end="url(#arrow)"/>'
                )
    for step in steps:
        x, y = position[step.name]
        name = escape(step.name)
        label, detail = escape(_label(step.name)), escape(_detail(step))
        parts.append(
            f'<a href="#step-{name}" class="node status-{escape(step.status)}" '
            f'data-step="{name}" data-status="{escape(step.status)}">'
            f"<title>{name}: {detail}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<text x="{x + 12:.1f}" y="{y + 19:.1f}" class="name">{label}</text>'
            f'<text x="{x + 12:.1f}" y="{y + 36:.1f}" class="detail">{detail}</text>'
            "</a>"
        )
    parts.append("</svg>")
    return "".join(parts)
