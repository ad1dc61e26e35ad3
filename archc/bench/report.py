"""Plain-text tables for the benchmarks' reports."""

from __future__ import annotations


def text_table(rows: list[list[str]]) -> str:
    """Rows of cells as aligned text: the first row a header (underlined), the first
    column left-aligned, the others right-aligned."""
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(w[0])] + [c.rjust(w[i]) for i, c in enumerate(r) if i]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("  ".join("-" * x for x in w))
    return "\n".join(out)
