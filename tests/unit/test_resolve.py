"""extends, overrides, ${...} references and their locations."""

from __future__ import annotations

from pathlib import Path

import pytest

from archc.diagnostics import DiagnosticError
from archc.frontend.interp import InterpError, evaluate
from archc.frontend.resolve import load_spec

BASE = """\
model: base
vocab: 64
d_model: 32
vars: {ffn: "${d_model * 4}", heads: 4}
define:
  block:
    - residual: [{norm: rms}, {attention: {heads: "${heads}"}}]
    - residual: [{norm: rms}, {mlp: {hidden: "${ffn}"}}]
layers:
  - embed
  - block
  - norm: rms
  - head
"""


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_references_follow_overrides(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, "a.yaml", BASE), ["d_model=64"])
    assert spec.d_model == 64
    assert spec.vars["ffn"] == 256
    mlp = spec.define["block"][1].body[1]
    assert mlp.params.hidden == 256


def test_override_indexes_layers_and_expands_shorthand(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", BASE)
    spec = load_spec(
        p, ["layers[2].norm.eps=0.001", "define.block[0].residual[1].attention.heads=8"]
    )
    assert spec.layers[2].params.eps == pytest.approx(1e-3)
    assert spec.layers[2].params.kind == "rms"  # the shorthand value survives
    assert spec.define["block"][0].body[1].params.heads == 8


def test_bad_override_points_at_command_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", BASE)
    with pytest.raises(DiagnosticError) as err:
        load_spec(p, ["layers[9].norm.eps=1"])
    assert err.value.diagnostics[0].loc.file == "<override 1>"


def test_extends_merges_maps_and_replaces_lists(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", BASE)
    child = _write(
        tmp_path, "child.yaml", "extends: base.yaml\nmodel: child\nd_model: 48\nvars: {heads: 6}\n"
    )
    spec = load_spec(child)
    assert (spec.model, spec.d_model, spec.vocab) == ("child", 48, 64)
    assert spec.vars == {"ffn": 192, "heads": 6}
    assert len(spec.layers) == 4


def test_extends_cycle_is_an_error_at_the_extends_line(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "extends: b.yaml\nmodel: a\n")
    _write(tmp_path, "b.yaml", "extends: a.yaml\nmodel: b\n")
    with pytest.raises(DiagnosticError) as err:
        load_spec(tmp_path / "a.yaml")
    text = err.value.render()
    assert "recursive extends" in text and ":1:10: error:" in text


def test_reference_cycle_and_unknown_name(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", BASE.replace("heads: 4}", 'heads: "${x}", x: "${heads}"}'))
    with pytest.raises(DiagnosticError) as err:
        load_spec(p)
    assert "refers to itself" in err.value.render()
    p2 = _write(tmp_path, "b.yaml", BASE.replace("${d_model * 4}", "${dmodel * 4}"))
    with pytest.raises(DiagnosticError) as err:
        load_spec(p2)
    assert "unknown name 'dmodel'" in err.value.render()


@pytest.mark.parametrize(
    "expr,value",
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("7 // 2", 3),
        ("-3 + 1", -2),
        ("max(2, 5)", 5),
        ("2 ** 10", 1024),
        ("a.b * 2", 6),
    ],
)
def test_expressions(expr: str, value: int) -> None:
    assert evaluate(expr, lambda name: {"a.b": 3}[name]) == value


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "open('x')",
        "[1, 2]",
        "a if a else b",
        "lambda: 1",
        "10 ** 10 ** 10",
        "1 / 0",
    ],
)
def test_expressions_never_execute(expr: str) -> None:
    with pytest.raises(InterpError):
        evaluate(expr, lambda name: 1)
