"""Search spaces in specs: parsing, naming, located errors, freeze -> compile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import archc
from archc.cli import run
from archc.diagnostics import DiagnosticError
from archc.search.constraints import build_candidate, concrete_spec, freeze, load_space
from archc.search.space import TEMPLATE

SPECS = Path(__file__).resolve().parents[2] / "specs"

BASE = """\
model: s
vocab: 32
d_model: 16
define:
  mixer: [{attention: {heads: 2}}]
layers:
  - embed
  - residual: [{norm: rms}, mixer]
  - norm: rms
  - head
train: {seq_len: 16, steps: 2}
"""

SPACE = (
    BASE
    + """\
search:
  d_model: {choice: [16, 32]}
  train.lr: {float: [1e-4, 1e-2], log: true}
  define.mixer:
    oneof:
      attn: [{attention: {heads: {choice: [1, 2]}}}]
      rec: [lstm]
  templates:
    one: {}
    two:
      layers:
        - embed
        - residual: [{norm: rms}, mixer]
        - residual: [{norm: rms}, {mlp: {mult: {int: [1, 4]}}}]
        - head
"""
)


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _check_errors(tmp_path: Path, search: str) -> list[str]:
    spec = _write(tmp_path, BASE + search)
    messages: list[str] = []
    assert run(["check", str(spec)], handler=messages.append) == 2
    return messages


def test_names_are_path_qualified_and_scoped(tmp_path: Path) -> None:
    src = load_space(_write(tmp_path, SPACE))
    doms = src.space.domains
    assert set(doms) == {
        "d_model",
        "train.lr",
        "define.mixer",
        "define.mixer=attn/define.mixer[0].attention.heads",
        TEMPLATE,
        "tmpl=two/layers[2].residual[1].mlp.mult",
    }
    assert doms[TEMPLATE].choices == ("one", "two")
    assert doms["define.mixer"].choices == ("attn", "rec")
    assert doms["train.lr"].log and doms["train.lr"].low == pytest.approx(1e-4)
    assert (doms["tmpl=two/layers[2].residual[1].mlp.mult"].low, 4) == (1, 4)


def test_a_name_keeps_one_domain_across_templates_and_draws(tmp_path: Path) -> None:
    """Every draw only uses declared names, each within its one declared domain, and a
    name scoped by a choice appears exactly when that choice is made."""
    src = load_space(_write(tmp_path, SPACE))
    doms = src.space.domains
    rng = np.random.RandomState(0)
    seen_templates = set()
    for _ in range(60):
        p = src.space.random_params(rng)
        seen_templates.add(p[TEMPLATE])
        assert set(p) <= set(doms)
        assert all(doms[k].contains(v) for k, v in p.items())
        assert ("tmpl=two/layers[2].residual[1].mlp.mult" in p) == (p[TEMPLATE] == "two")
        heads = "define.mixer=attn/define.mixer[0].attention.heads"
        assert (heads in p) == (p["define.mixer"] == "attn")
    assert seen_templates == {"one", "two"}


def test_freeze_gives_a_spec_that_compiles_to_the_candidate_graph(tmp_path: Path) -> None:
    src = load_space(_write(tmp_path, SPACE))
    params = {
        TEMPLATE: "two",
        "tmpl=two/layers[2].residual[1].mlp.mult": 3,
        "d_model": 32,
        "train.lr": 1e-3,
        "define.mixer": "attn",
        "define.mixer=attn/define.mixer[0].attention.heads": 1,
    }
    cand = build_candidate(src, params)
    text = freeze(src, params)
    assert "search:" not in text
    frozen = _write(tmp_path, text, "frozen.yaml")
    spec = archc.load(frozen)
    # Hand-written expectation of what the choices mean.
    assert spec.d_model == 32 and spec.train.lr == pytest.approx(1e-3)
    assert [layer.kind for layer in spec.layers] == ["embed", "residual", "residual", "head"]
    assert spec.layers[2].body[1].params.mult == 3
    assert spec.define["mixer"][0].params.heads == 1
    model = archc.compile(frozen)
    assert model.spec_hash == cand.graph_hash
    # A different choice is a different graph.
    other = build_candidate(src, {**params, "d_model": 16})
    assert other.graph_hash != cand.graph_hash


def test_apply_rejects_values_outside_the_domain(tmp_path: Path) -> None:
    src = load_space(_write(tmp_path, SPACE))
    with pytest.raises(DiagnosticError, match="outside the domain"):
        concrete_spec(src, {TEMPLATE: "one", "d_model": 48, "train.lr": 1e-3})
    with pytest.raises(DiagnosticError, match="no value for search parameter"):
        concrete_spec(src, {TEMPLATE: "one", "d_model": 16})


def test_check_accepts_a_search_spec_and_the_library_examples(tmp_path: Path) -> None:
    for spec in [_write(tmp_path, SPACE), SPECS / "search-mqar.yaml", SPECS / "search-hybrid.yaml"]:
        messages: list[str] = []
        assert run(["check", str(spec)], handler=messages.append) == 0, messages


@pytest.mark.parametrize(
    ("search", "line", "col", "message"),
    [
        ("search: {}\n", 12, 1, "search space is empty"),
        ("search:\n  d_modle: {choice: [16, 32]}\n", 13, 3, "unknown key 'd_modle'"),
        ("search:\n  layers[7].norm.kind: {choice: [rms]}\n", 13, 3, "layers[7] does not exist"),
        ("search:\n  d_model: {int: [64, 16]}\n", 13, 18, "is empty (low > high)"),
        ("search:\n  d_model: {int: [16, 64], stp: 2}\n", 13, 28, "unknown key 'stp'"),
        ("search:\n  train.lr: {float: [0, 1], log: true}\n", 13, 21, "needs low > 0"),
        ("search:\n  d_model: {choice: []}\n", 13, 21, "non-empty list of scalars"),
        ("search:\n  d_model: {choice: [0, 16]}\n", 13, 12, "greater than 0"),
        (
            "search:\n  d_model: {choice: [16]}\n  constraints: {max_parms: 5}\n",
            14,
            17,
            "max_parms",
        ),
        ("search:\n  define.mixer: {oneof: {}}\n", 13, 18, "oneof needs a non-empty"),
    ],
)
def test_bad_spaces_are_located_errors(
    tmp_path: Path, search: str, line: int, col: int, message: str
) -> None:
    messages = _check_errors(tmp_path, search)
    text = "\n".join(messages)
    assert f"s.yaml:{line}:{col}: error:" in text, text
    assert message in text


def test_a_bad_value_inside_one_template_is_reported_there(tmp_path: Path) -> None:
    search = "search:\n  templates:\n    a: {}\n    b: {layers: [embed, {norm: rmz}, head]}\n"
    text = "\n".join(_check_errors(tmp_path, search))
    assert "s.yaml:15:32: error:" in text and "rmz" in text, text


def test_fmt_round_trips_a_search_section(tmp_path: Path) -> None:
    spec = _write(tmp_path, SPACE)
    for to in ("yaml", "dsl"):
        out = tmp_path / f"out.{'arch' if to == 'dsl' else 'yaml'}"
        assert run(["fmt", str(spec), "--to", to, "-o", str(out)]) == 0
        assert archc.load(out).search == archc.load(spec).search
        assert load_space(out).space.domains.keys() == load_space(spec).space.domains.keys()


def test_a_spec_without_search_has_no_space(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError, match="has no search section"):
        load_space(_write(tmp_path, BASE))
