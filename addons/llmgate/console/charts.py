"""Charts as inline SVG, drawn on the server: no chart library, no script."""

from __future__ import annotations

from html import escape

W, H, PAD = 600, 140, 22
MAX_BAR = 40  # a bar's width at most: one day or two keys must not fill the chart
LABEL_EACH = 8  # up to this many bars, each has its label


def bars(title: str, points: list[tuple[str, float]], unit: str = "") -> str:
    """A bar chart of (label, value); each bar's tooltip names its label and value."""
    top = max((v for _, v in points), default=0) or 1
    step = (W - 2 * PAD) / max(len(points), 1)
    out = [f'<figure class="chart"><figcaption>{escape(title)} <small>(max {_num(top)}{escape(unit)})</small>'
           f'</figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" class="axis"/>']
    for i, (label, v) in enumerate(points):
        h = (H - 2 * PAD) * v / top
        x = PAD + i * step
        out.append(f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{min(max(step - 1, 1), MAX_BAR):.1f}" '
                   f'height="{h:.1f}">'
                   f'<title>{escape(label)}: {_num(v)}{escape(unit)}</title></rect>')
    if 0 < len(points) <= LABEL_EACH:  # few bars: each named under it
        bar = min(max(step - 1, 1), MAX_BAR)
        out.extend(f'<text x="{PAD + i * step + bar / 2:.1f}" y="{H - 6}" text-anchor="middle">{escape(label)}</text>'
                   for i, (label, _) in enumerate(points))
    elif points:  # many: the ends of the axis
        out.append(f'<text x="{PAD}" y="{H - 6}">{escape(points[0][0])}</text>'
                   f'<text x="{W - PAD}" y="{H - 6}" text-anchor="end">{escape(points[-1][0])}</text>')
    out.append("</svg></figure>")
    return "".join(out)


def _num(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) and not v.is_integer() else f"{int(v)}"
