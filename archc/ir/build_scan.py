"""Builders of the recurrent components (lstm, gru, rnn, mingru/minlstm, ssm, gla,
delta): each becomes one `scan` node whose cell and mode are checked here."""

from __future__ import annotations

from collections.abc import Callable

from archc.frontend.components import (
    GruParams,
    MinRnnParams,
    RecurrentParams,
    RnnParams,
    SsmParams,
)
from archc.frontend.schema import Component
from archc.ir.build_ctx import BuildContext, Builder
from archc.ir.graph import Value
from archc.ir.ops import MATRIX_CELLS, NEWTON_ITERS, NEWTON_TOL, scan_modes


def _recurrent(cell_of: Callable[[Component], str]) -> Builder:
    def build(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
        p: RecurrentParams = c.params  # type: ignore[assignment]
        hidden = p.hidden or ctx.width(x)
        return ctx.emit(
            "scan",
            {
                "cell": cell_of(c),
                "hidden": hidden,
                "layers": p.layers,
                "bidirectional": p.bidirectional,
                "bias": p.bias,
                "mode": "sequential",
            },
            [x],
            path,
            c.loc,
        )

    return build


def _scan_mode(ctx: BuildContext, c: Component, cell: str, mode: str) -> str:
    """Check a component's `mode` against what its cell supports."""
    if mode == "newton" and mode not in scan_modes(cell):
        raise ctx.fail(
            f"'{c.kind}' mode 'newton' is reserved for nonlinear cells with a diagonal "
            f"recurrence (gru with recurrent: diagonal); use one of {scan_modes(cell)}",
            c.loc_of("mode"),
        )
    if mode not in scan_modes(cell) and cell in MATRIX_CELLS:
        raise ctx.fail(
            f"'{c.kind}' has a matrix state with no associative form, so mode '{mode}' "
            f"does not apply; use one of {scan_modes(cell)}",
            c.loc_of("mode"),
        )
    if mode not in scan_modes(cell):
        raise ctx.fail(
            f"'{c.kind}' ({cell}) is not linear in its state, so mode '{mode}' does not "
            f"apply; use one of {scan_modes(cell)}",
            c.loc_of("mode"),
        )
    return mode


_DIAG_ONLY = ("mode", "newton_iters", "newton_tol")


def _gru(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """gru: torch.nn.GRU (recurrent: full) or the diagonal GRU cell diag_gru."""
    p: GruParams = c.params  # type: ignore[assignment]
    if p.recurrent == "full":
        for name in _DIAG_ONLY:
            if getattr(p, name) is not None:
                raise ctx.fail(
                    f"'gru' parameter '{name}' applies to recurrent: diagonal only "
                    "(a full GRU runs the sequential nn.GRU kernel)",
                    c.loc_of(name),
                )
        return _recurrent(lambda c: "gru")(ctx, c, x, path)
    if p.layers != 1 or p.bidirectional:
        raise ctx.fail(
            "a diagonal gru has one layer and one direction; stack gru layers instead",
            c.loc_of("layers" if p.layers != 1 else "bidirectional"),
        )
    mode = _scan_mode(ctx, c, "diag_gru", p.mode or "auto")
    return ctx.emit(
        "scan",
        {
            "cell": "diag_gru",
            "hidden": p.hidden or ctx.width(x),
            "bias": p.bias,
            "mode": mode,
            "iters": p.newton_iters if p.newton_iters is not None else NEWTON_ITERS,
            "tol": p.newton_tol if p.newton_tol is not None else NEWTON_TOL,
        },
        [x],
        path,
        c.loc,
    )


def _rnn(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: RnnParams = c.params  # type: ignore[assignment]
    if p.act != "leaky":
        if p.mode not in ("auto", "sequential"):
            _scan_mode(ctx, c, f"rnn_{p.act}", p.mode)
        return _recurrent(lambda c: f"rnn_{p.act}")(ctx, c, x, path)
    cell = f"leaky_{p.nonlinearity}"
    if p.layers != 1 or p.bidirectional:
        raise ctx.fail(
            "a leaky rnn has one layer and one direction; stack rnn layers instead", c.loc
        )
    return ctx.emit(
        "scan",
        {
            "cell": cell,
            "hidden": p.hidden or ctx.width(x),
            "bias": p.bias,
            "mode": _scan_mode(ctx, c, cell, p.mode),
        },
        [x],
        path,
        c.loc,
    )


def _min_rnn(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: MinRnnParams = c.params  # type: ignore[assignment]
    return ctx.emit(
        "scan",
        {
            "cell": c.kind,
            "hidden": p.hidden or ctx.width(x),
            "bias": p.bias,
            "mode": _scan_mode(ctx, c, c.kind, p.mode),
        },
        [x],
        path,
        c.loc,
    )


def _ssm(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: SsmParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    if p.hidden is not None and p.hidden != d:
        raise ctx.fail(
            f"an ssm keeps the width: hidden={p.hidden} must equal the input width {d} "
            "(put a linear before it to change the width)",
            c.loc_of("hidden"),
        )
    if p.disc != "zoh" and p.kind != "s4d":
        raise ctx.fail(f"disc applies to kind s4d only, not {p.kind}", c.loc_of("disc"))
    cell = f"s4d_{p.disc}" if p.kind == "s4d" else p.kind
    return ctx.emit(
        "scan",
        {
            "cell": cell,
            "hidden": d,
            "bias": False,
            "mode": _scan_mode(ctx, c, cell, p.mode),
            "state": p.state,
        },
        [x],
        path,
        c.loc,
    )


def _matrix(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """gla / delta: a width-keeping scan whose carry is one (dk, dv) matrix per head."""
    p = c.params
    d = ctx.width(x)
    heads = p.heads  # type: ignore[attr-defined]
    if d % heads:
        raise ctx.fail(
            f"'{c.kind}' heads={heads} must divide the input width {d}", c.loc_of("heads")
        )
    return ctx.emit(
        "scan",
        {
            "cell": c.kind,
            "hidden": d,
            "bias": True,
            "mode": _scan_mode(ctx, c, c.kind, p.mode),  # type: ignore[attr-defined]
            "state": getattr(p, "key_dim", None),
            "heads": heads,
            "chunk": p.chunk,  # type: ignore[attr-defined]
        },
        [x],
        path,
        c.loc,
    )


RECURRENT_BUILDERS: dict[str, Builder] = {
    "lstm": _recurrent(lambda c: "lstm"),
    "gru": _gru,
    "rnn": _rnn,
    "mingru": _min_rnn,
    "minlstm": _min_rnn,
    "ssm": _ssm,
    "gla": _matrix,
    "delta": _matrix,
}
