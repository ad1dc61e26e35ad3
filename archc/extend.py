"""Extending archc from Python: recurrent cells that specs can name.

    import archc

    def peephole(hidden: int) -> dict:
        return {
            "state": {"h": hidden, "c": hidden},
            "let": {"f": f"sigmoid(linear(x, {hidden}) + diag(c))", ...},
            "update": {"c": "f * c + ...", "h": "..."},
            "output": "h",
        }

    archc.register_cell("peephole", peephole, hidden=64)
    model = archc.compile("... layers: [embed, {peephole: {hidden: 32}}, head] ...")

`register_cell(name, define, **widths)` makes `name` a spec component with the integer
parameters `widths` (their defaults; the first is the shorthand, `peephole: 32`) plus
`mode`, `newton_iters`, `newton_tol`. At build time archc calls `define(**widths)` for
the values the spec gives and compiles the returned cell (`state`, `let`, `update`,
`output`, in the expression language of the `cell:` component, archc/frontend/
cell_expr.py) exactly like a `cell:` written in the spec: the same checks, the same
modes (Newton when the cell's Jacobian is diagonal), streaming state, `lengths`, and
`archc compile --emit torch` output. The Python function runs in the user's process
when the spec is built; specs themselves stay data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, ValidationError, create_model

from archc.diagnostics import SourceLoc
from archc.frontend.components import CellParams, ComponentDef, Params, register_component
from archc.frontend.schema import Component

CellDefinition = Callable[..., dict[str, Any]]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_cell(
    name: str, define: CellDefinition, /, *, doc: str = "", replace: bool = False, **widths: int
) -> None:
    """Register `name` as a recurrent-cell component built from `define(**widths)` (see
    the module docstring). `widths` are the component's integer parameters and defaults."""
    from archc.ir.build import register_builder

    if not _NAME.match(name):
        raise ValueError(f"cell name {name!r} must match {_NAME.pattern}")
    reserved = set(_CellKnobs.model_fields)
    bad = [k for k, v in widths.items() if k in reserved or not isinstance(v, int) or v <= 0]
    if bad:
        raise ValueError(
            f"cell parameters must be positive int defaults and not {sorted(reserved)}: {bad}"
        )
    fields: dict[str, Any] = {k: (int, Field(default=v, gt=0)) for k, v in widths.items()}
    params = create_model(f"{name.title().replace('_', '')}Params", __base__=_CellKnobs, **fields)
    params.__doc__ = doc or (define.__doc__ or f"the registered cell {name!r}").strip()
    register_component(
        ComponentDef(name, params, next(iter(widths), None), doc=doc or f"Python cell {name}"),
        replace=replace,
    )
    register_builder(name, _builder(name, define, tuple(widths)))


class _CellKnobs(Params):
    """What every registered cell takes besides its own widths (as `cell:` does)."""

    mode: Literal["auto", "sequential", "newton"] = Field(
        default="auto", description="newton: diagonal cells only (auto: newton on CUDA)"
    )
    newton_iters: int | None = Field(default=None, gt=0)
    newton_tol: float | None = Field(default=None, gt=0)


def _builder(name: str, define: CellDefinition, widths: tuple[str, ...]) -> Callable[..., Any]:
    from archc.ir.build_scan import RECURRENT_BUILDERS

    build_cell = RECURRENT_BUILDERS["cell"]

    def build(ctx: Any, c: Component, x: Any, path: str) -> Any:
        p = c.params
        values = {k: getattr(p, k) for k in widths}
        knobs = {k: getattr(p, k) for k in _CellKnobs.model_fields}
        try:
            cell = CellParams(**define(**values), **knobs)
        except (ValidationError, TypeError) as exc:
            message = f"registered cell '{name}' {values} is not a valid cell: {exc}"
            raise ctx.fail(message, c.loc) from None
        # Expression errors are located at this component (no column span: the
        # expressions' text is the Python function's, not the spec's).
        at = None if c.loc is None else SourceLoc(c.loc.file, c.loc.line, c.loc.col)
        locs = {k: at for k in CellParams.model_fields}
        inner = Component(kind="cell", params=cell, loc=c.loc, param_locs=locs)
        return build_cell(ctx, inner, x, path)

    return build
