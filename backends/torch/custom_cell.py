"""Source text of a custom cell's `pre` and `step` functions (see modules/cells_custom.py).

The text is built only from checked expression trees (archc/frontend/cell_expr.py):
validated identifiers, a fixed table of functions and repr'd numbers, so it is safe to
execute and reads like hand-written code in model.py. State-independent subtrees (e.g.
`linear(x, 64)`) move to `pre`, which runs once over all steps; `step` reads them.
"""

from __future__ import annotations

from archc.frontend.cell_expr import (
    UNARY,
    Bin,
    Call,
    Cell,
    Expr,
    Name,
    Neg,
    Num,
    canon,
    cell_from_body,
    names,
    walk,
)
from archc.ir.graph import Node

_FN = {
    "tanh": "torch.tanh",
    "sigmoid": "torch.sigmoid",
    "relu": "F.relu",
    "gelu": "F.gelu",
    "silu": "F.silu",
    "exp": "torch.exp",
    "log": "torch.log",
    "softplus": "F.softplus",
    "abs": "torch.abs",
}
assert set(_FN) == set(UNARY)
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _prec(e: Expr) -> int:
    if isinstance(e, Bin):
        return _PREC[e.op]
    return 3 if isinstance(e, Neg) else 4


class _Py:
    """Python text of expressions; `env` maps spec names to variables, `hoisted` maps
    the canonical text of a hoisted subtree to the variable holding it."""

    def __init__(self, env: dict[str, str], hoisted: dict[str, str]) -> None:
        self.env, self.hoisted = env, hoisted

    def __call__(self, e: Expr) -> str:
        key = _key(e)
        if key in self.hoisted:
            return self.hoisted[key]
        if isinstance(e, Num):
            return repr(e.value)
        if isinstance(e, Name):
            return self.env[e.id]
        if isinstance(e, Neg):
            inner = self(e.arg)
            return f"-({inner})" if _prec(e.arg) < 3 else f"-{inner}"
        if isinstance(e, Bin):
            a, b = self(e.a), self(e.b)
            if _prec(e.a) < _PREC[e.op] and not self._atom(e.a):
                a = f"({a})"
            if _prec(e.b) <= _PREC[e.op] and not self._atom(e.b):
                b = f"({b})"
            return f"{a} {e.op} {b}"
        assert isinstance(e, Call)
        if e.fn in _FN:
            return f"{_FN[e.fn]}({self(e.args[0])})"
        if e.fn == "linear":
            bias = f"p.{e.site}_bias" if e.bias() else "None"
            return f"F.linear({self(e.args[0])}, p.{e.site}_weight, {bias})"
        if e.fn == "diag":
            return f"p.{e.site}_weight * {self(e.args[0])}"
        return f"p.{e.site}_weight"  # param(n)

    def _atom(self, e: Expr) -> bool:
        return _key(e) in self.hoisted


def _key(e: Expr) -> str:
    """Canonical text plus the call sites, so two calls with their own weights differ."""
    sites = ",".join(s.site for s in walk(e) if isinstance(s, Call) and s.site)
    return f"{canon(e)}|{sites}"


def _x_lets(cell: Cell) -> set[str]:
    """Lets that read the input x (directly or through earlier lets)."""
    out: set[str] = set()
    for k, e in cell.lets:
        if any(n == "x" or n in out for n in names(e)):
            out.add(k)
    return out


def _hoist(cell: Cell, e: Expr, x_lets: set[str], out: dict[str, Expr]) -> None:
    """Collect the maximal state-independent subtrees of `e` that read x (so they have
    a time dim to compute all steps at once); parameters alone stay in the step."""
    if not cell.state_deps(e):
        reads_x = any(n == "x" or n in x_lets for n in names(e))
        if reads_x and not isinstance(e, (Name, Num)):
            out.setdefault(_key(e), e)
        return
    if isinstance(e, Neg):
        _hoist(cell, e.arg, x_lets, out)
    elif isinstance(e, Bin):
        _hoist(cell, e.a, x_lets, out)
        _hoist(cell, e.b, x_lets, out)
    elif isinstance(e, Call):
        for a in e.args:
            _hoist(cell, a, x_lets, out)


def cell_names(path: str) -> tuple[str, str]:
    """(pre, step) function names of the custom cell at module `path`."""
    base = "".join(ch if ch.isalnum() else "_" for ch in path)
    return f"_cell_pre_{base}", f"_cell_step_{base}"


def cell_source(node: Node, d_in: int) -> str:
    """Definitions of the `pre` and `step` functions of the custom scan `node`."""
    cell = cell_from_body(node.attrs["body"], d_in)
    pre_name, step_name = cell_names(node.path)
    let_vars = {k: f"l_{k}" for k, _ in cell.lets}
    old = {k: f"s_{k}" for k, _ in cell.state}
    new = {k: f"n_{k}" for k, _ in cell.state}
    # Lets that read no state run in `pre` whole; vector ones are passed to `step`.
    x_lets = _x_lets(cell)
    free_lets = [(k, e) for k, e in cell.lets if not cell.state_deps(e)]
    passed = [k for k, _ in free_lets if k in x_lets]
    hoisted: dict[str, Expr] = {}
    for _, e in cell.lets:
        if cell.state_deps(e):
            _hoist(cell, e, x_lets, hoisted)
    for _, e in (*cell.updates, ("", cell.output)):
        _hoist(cell, e, x_lets, hoisted)
    pre_py = _Py({"x": "x_", **let_vars}, {})
    pre_lines = [f"    {let_vars[k]} = {pre_py(e)}" for k, e in free_lets]
    results = [let_vars[k] for k in passed] + [pre_py(e) for e in hoisted.values()]
    u_vars = [f"u{i}" for i in range(len(results))]
    hoist_vars = dict(zip(hoisted, u_vars[len(passed) :], strict=True))
    pre = "\n".join(
        [
            f"def {pre_name}(p, x_):",
            f'    """State-independent parts of the cell {node.path} for all steps at once:',
            '    x (B, T, D) -> one (B, T, width) tensor per part."""',
            *pre_lines,
            f"    return ({', '.join(results)}{',' if len(results) == 1 else ''})",
        ]
    )
    env = {"x": "x_", **old, **let_vars}
    py = _Py(env, hoist_vars)
    body: list[str] = []
    for k, e in cell.lets:
        if k in passed:
            body.append(f"    {let_vars[k]} = {u_vars[passed.index(k)]}")
        else:
            body.append(f"    {let_vars[k]} = {py(e)}")
    body += [f"    {new[k]} = {py(e)}" for k, e in cell.updates]
    out = _Py({**env, **new}, hoist_vars)(cell.output)
    args = ", ".join(["p", "x_", *u_vars, *old.values()])
    step = "\n".join(
        [
            f"def {step_name}({args}):",
            f'    """One step of the cell {node.path} (any leading dims, e.g. (B,) or (B, T)):',
            '    the state entries after the step, then the output."""',
            *body,
            f"    return {', '.join([*new.values(), out])}",
        ]
    )
    return pre + "\n\n\n" + step + "\n"


def cell_ctor(node: Node, d_in: int) -> str:
    """Constructor text of the CustomCell module for `node`."""
    a = node.attrs
    cell = cell_from_body(a["body"], d_in)
    pre_name, step_name = cell_names(node.path)
    params = tuple((p.name, p.shape) for p in node.params)
    return (
        f"L.CustomCell({pre_name}, {step_name}, {params!r}, {cell.state!r}, "
        f"mode={a['mode']!r}, newton={a['cell'] == 'custom_diag'!r}, "
        f"iters={a['iters']!r}, tol={a['tol']!r})"
    )
