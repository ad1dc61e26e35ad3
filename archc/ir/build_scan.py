"""Builders of the recurrent components (lstm, gru, rnn, mingru/minlstm, ssm, gla,
delta, aaren): each becomes one `scan` node whose cell and mode are checked here."""

from __future__ import annotations

from collections.abc import Callable

from archc.frontend.cell_expr import check_cell, expr_loc
from archc.frontend.components import (
    AarenParams,
    CellParams,
    GruParams,
    LstmParams,
    MinRnnParams,
    RecurrentParams,
    RnnParams,
    SsmParams,
)
from archc.frontend.schema import Component
from archc.ir.build_ctx import BuildAbort, BuildContext, Builder
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
            f"'{c.kind}' mode 'newton' is reserved for nonlinear cells with a structured "
            f"recurrence (gru or lstm with recurrent: diagonal, rnn with recurrent: diagonal "
            f"or block); use one of {scan_modes(cell)}",
            c.loc_of("mode"),
        )
    if mode not in scan_modes(cell) and cell == "aaren":
        raise ctx.fail(
            f"'{c.kind}' combines its softmax state by an associative scan and has no "
            f"'{mode}' form; use one of {scan_modes(cell)}",
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


def _gated(kind: str) -> Builder:
    """gru / lstm: torch.nn.GRU / nn.LSTM (recurrent: full) or the diagonal cell diag_<kind>."""
    cell = f"diag_{kind}"

    def build(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
        p: GruParams | LstmParams = c.params  # type: ignore[assignment]
        if p.recurrent == "full":
            for name in _DIAG_ONLY:
                if getattr(p, name) is not None:
                    raise ctx.fail(
                        f"'{kind}' parameter '{name}' applies to recurrent: diagonal only "
                        f"(a full {kind.upper()} runs the sequential nn.{kind.upper()} kernel)",
                        c.loc_of(name),
                    )
            return _recurrent(lambda c: kind)(ctx, c, x, path)
        if p.layers != 1:
            raise ctx.fail(
                f"a diagonal {kind} has one layer; stack {kind} layers instead",
                c.loc_of("layers"),
            )
        mode = _scan_mode(ctx, c, cell, p.mode or "auto")
        return ctx.emit(
            "scan",
            {
                "cell": cell,
                "hidden": p.hidden or ctx.width(x),
                "bidirectional": p.bidirectional,
                "bias": p.bias,
                "mode": mode,
                "iters": p.newton_iters if p.newton_iters is not None else NEWTON_ITERS,
                "tol": p.newton_tol if p.newton_tol is not None else NEWTON_TOL,
            },
            [x],
            path,
            c.loc,
        )

    return build


def _structured_rnn(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """rnn with recurrent: diagonal / block: a tanh RNN that Newton's method can solve."""
    p: RnnParams = c.params  # type: ignore[assignment]
    if p.act != "tanh":
        raise ctx.fail(
            f"recurrent: {p.recurrent} is a tanh RNN; act: {p.act} needs recurrent: full",
            c.loc_of("act"),
        )
    if p.layers != 1:
        raise ctx.fail(
            f"a {p.recurrent} rnn has one layer; stack rnn layers instead", c.loc_of("layers")
        )
    hidden = p.hidden or ctx.width(x)
    if p.recurrent == "block" and (p.block is None or hidden % p.block):
        raise ctx.fail(
            f"recurrent: block needs 'block' dividing hidden={hidden} (got {p.block})",
            c.loc_of("block") if p.block is not None else c.loc,
        )
    cell = "diag_rnn" if p.recurrent == "diagonal" else "block_rnn"
    return ctx.emit(
        "scan",
        {
            "cell": cell,
            "hidden": hidden,
            "bias": p.bias,
            "bidirectional": p.bidirectional,
            "mode": _scan_mode(ctx, c, cell, p.mode),
            "iters": p.newton_iters if p.newton_iters is not None else NEWTON_ITERS,
            "tol": p.newton_tol if p.newton_tol is not None else NEWTON_TOL,
            "block": p.block if p.recurrent == "block" else None,
        },
        [x],
        path,
        c.loc,
    )


def _rnn(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    p: RnnParams = c.params  # type: ignore[assignment]
    if p.recurrent != "full":
        return _structured_rnn(ctx, c, x, path)
    for name in ("block", "newton_iters", "newton_tol"):
        if getattr(p, name) is not None:
            raise ctx.fail(
                f"'rnn' parameter '{name}' applies to recurrent: diagonal or block only",
                c.loc_of(name),
            )
    if p.act != "leaky":
        if p.mode not in ("auto", "sequential"):
            _scan_mode(ctx, c, f"rnn_{p.act}", p.mode)
        return _recurrent(lambda c: f"rnn_{p.act}")(ctx, c, x, path)
    cell = f"leaky_{p.nonlinearity}"
    if p.layers != 1:
        raise ctx.fail("a leaky rnn has one layer; stack rnn layers instead", c.loc_of("layers"))
    return ctx.emit(
        "scan",
        {
            "cell": cell,
            "hidden": p.hidden or ctx.width(x),
            "bidirectional": p.bidirectional,
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
            "bidirectional": p.bidirectional,
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
            "bidirectional": p.bidirectional,
            "bias": False,
            "mode": _scan_mode(ctx, c, cell, p.mode),
            "state": p.state,
        },
        [x],
        path,
        c.loc,
    )


def _matrix(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """gla / delta / plstm: a width-keeping scan whose carry is one (dk, dv) matrix per head."""
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
            "bidirectional": p.bidirectional,  # type: ignore[attr-defined]
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


def _aaren(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """aaren: a width-keeping scan whose carry is a softmax summary [u | m | w] per head."""
    p: AarenParams = c.params  # type: ignore[assignment]
    d = ctx.width(x)
    if d % p.heads:
        raise ctx.fail(
            f"'aaren' heads={p.heads} must divide the input width {d}", c.loc_of("heads")
        )
    return ctx.emit(
        "scan",
        {
            "cell": "aaren",
            "hidden": d,
            "bias": False,
            "mode": _scan_mode(ctx, c, "aaren", p.mode),
            "heads": p.heads,
        },
        [x],
        path,
        c.loc,
    )


def _custom_cell(ctx: BuildContext, c: Component, x: Value, path: str) -> Value:
    """cell: a recurrence written as expressions (archc/frontend/cell_expr.py); every
    problem in them is reported at once, inside the expression it concerns."""
    p: CellParams = c.params  # type: ignore[assignment]
    cell, problems = check_cell(p.state, p.let, p.update, p.output, ctx.width(x))
    for prob in problems:
        err = prob.error
        loc = expr_loc(c.loc_of(prob.field), err.start, err.end)
        ctx.diags.error(f"cell {prob.field}: {err.message}", loc, hint=err.hint)
    if cell is None:
        raise BuildAbort()
    why = cell.newton_problem()
    if p.mode == "newton" and why is not None:
        field, message, sub = why
        raise ctx.fail(f"cell {field}: {message}", expr_loc(c.loc_of(field), sub.start, sub.end))
    for name in ("newton_iters", "newton_tol"):
        if why is not None and getattr(p, name) is not None:
            raise ctx.fail(
                f"'cell' parameter '{name}' applies only to cells with a diagonal Jacobian "
                f"({why[0]}: {why[1].split(', but ')[-1]})",
                c.loc_of(name),
            )
    return ctx.emit(
        "scan",
        {
            "cell": "custom" if why is not None else "custom_diag",
            "hidden": cell.out_width,
            "mode": p.mode,
            # Newton's budget applies to diagonal cells only (dense ones always loop).
            "iters": None if why else p.newton_iters or NEWTON_ITERS,
            "tol": None if why else p.newton_tol or NEWTON_TOL,
            "body": cell.body(),
        },
        [x],
        path,
        c.loc,
    )


RECURRENT_BUILDERS: dict[str, Builder] = {
    "lstm": _gated("lstm"),
    "gru": _gated("gru"),
    "rnn": _rnn,
    "mingru": _min_rnn,
    "minlstm": _min_rnn,
    "ssm": _ssm,
    "gla": _matrix,
    "delta": _matrix,
    "plstm": _matrix,
    "aaren": _aaren,
    "cell": _custom_cell,
}
