"""Canonical writers: golden output and lossless round trips through both frontends."""

from __future__ import annotations

from typing import Any

import pytest
from example_spec_data import EXAMPLE_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archc.frontend.dsl import parse_dsl
from archc.frontend.format import normalize_layer_item, to_dsl, to_yaml
from archc.frontend.yaml import load_yaml


def typed(x: Any) -> Any:
    """`x` with every scalar tagged by its type, so 1 != 1.0 != True in comparisons."""
    if isinstance(x, dict):
        return {k: typed(v) for k, v in x.items()}
    if isinstance(x, list):
        return [typed(v) for v in x]
    return (type(x).__name__, repr(x))


def normalized(data: Any) -> Any:
    """Spec data with the items of `layers` and of each `define` block normalised."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    if isinstance(out.get("layers"), list):
        out["layers"] = [normalize_layer_item(i) for i in out["layers"]]
    if isinstance(out.get("define"), dict):
        out["define"] = {
            k: [normalize_layer_item(i) for i in v] if isinstance(v, list) else v
            for k, v in out["define"].items()
        }
    return out


def dsl_round_trip(data: Any) -> Any:
    return parse_dsl(to_dsl(data), "rt.arch")[0]


def yaml_round_trip(data: Any) -> Any:
    return load_yaml(to_yaml(data), "rt.yaml")[0]


def assert_located(data: Any, locs: Any, path: tuple = ()) -> None:
    """Every value has a location, and so does every mapping key (the LocMap contract)."""
    assert path in locs.values, path
    if isinstance(data, dict):
        for key, sub in data.items():
            assert (*path, key) in locs.keys, (*path, key)
            assert_located(sub, locs, (*path, key))
    elif isinstance(data, list):
        for i, sub in enumerate(data):
            assert_located(sub, locs, (*path, i))


def assert_same(a: Any, b: Any) -> None:
    assert typed(normalized(a)) == typed(normalized(b))
    assert typed(a) == typed(b)  # the writers are in fact exact


EXAMPLE_DSL = """\
model gpt-tiny(vocab=256, d_model=128, extends=base.arch) {
  train = {lr: 0.0003, steps: 100}

  let ffn = ${d_model * 4}

  def block {
    residual { norm(rms); attention(heads=4, pos=rope) }
    residual { norm(rms); mlp(mult=4, act=swiglu) }
  }

  embed
  repeat(n=4) { block }
  loop(steps=2, tie=cycle(2)) { block; block }
  norm(rms)
  head(tied=true)
}
"""

EXAMPLE_YAML = """\
model: gpt-tiny
vocab: 256
d_model: 128
extends: base.arch
train:
  lr: 0.0003
  steps: 100
vars:
  ffn: ${d_model * 4}
define:
  block:
    - residual:
        - norm: rms
        - attention: {heads: 4, pos: rope}
    - residual:
        - norm: rms
        - mlp: {mult: 4, act: swiglu}
layers:
  - embed
  - repeat:
      n: 4
      body:
        - block
  - loop:
      steps: 2
      tie: cycle(2)
      body:
        - block
        - block
  - norm: rms
  - head: {tied: true}
"""


def test_golden_dsl() -> None:
    assert to_dsl(EXAMPLE_DATA) == EXAMPLE_DSL
    assert to_dsl(parse_dsl(EXAMPLE_DSL, "g.arch")[0]) == EXAMPLE_DSL


def test_golden_yaml() -> None:
    assert to_yaml(EXAMPLE_DATA) == EXAMPLE_YAML
    assert to_yaml(load_yaml(EXAMPLE_YAML, "g.yaml")[0]) == EXAMPLE_YAML


def test_example_round_trips() -> None:
    data = EXAMPLE_DATA
    assert_same(dsl_round_trip(data), data)
    assert_same(yaml_round_trip(data), data)
    assert_same(yaml_round_trip(dsl_round_trip(yaml_round_trip(data))), data)


def test_long_bodies_and_args_break_over_lines() -> None:
    data = {
        "model": "m",
        "layers": [
            {"residual": ["a", "b", "c", "d"]},
            {
                "attention": {
                    "heads": 4,
                    "kv_heads": 2,
                    "mask": "causal",
                    "window": 128,
                    "pos": "rope",
                    "rope_base": 10000.0,
                }
            },
            {"seq": [{"residual": ["x"]}]},
        ],
    }
    text = to_dsl(data)
    assert (
        text
        == """\
model m {
  residual {
    a
    b
    c
    d
  }
  attention(
    heads=4,
    kv_heads=2,
    mask=causal,
    window=128,
    pos=rope,
    rope_base=10000.0,
  )
  seq {
    residual { x }
  }
}
"""
    )
    assert_same(dsl_round_trip(data), data)


@pytest.mark.parametrize(
    ("value", "dsl", "yaml"),
    [
        ("rms", "rms", "rms"),
        ("gpt-2.x", "gpt-2.x", "gpt-2.x"),
        ("true", '"true"', '"true"'),
        ("def", '"def"', "def"),
        ("yes", "yes", '"yes"'),
        ("1e3", '"1e3"', '"1e3"'),
        ("1e-5", '"1e-5"', '"1e-5"'),
        ("inf", '"inf"', "inf"),
        ("null", '"null"', '"null"'),
        ("", '""', '""'),
        ("a b", '"a b"', "a b"),
        ("a: b", '"a: b"', '"a: b"'),
        ("${d_model * 4}", "${d_model * 4}", '"${d_model * 4}"'),
        ("cycle(2)", "cycle(2)", "cycle(2)"),
        ("line\nbreak", '"line\\nbreak"', '"line\\nbreak"'),
        (1e-5, "1e-05", "1e-05"),
        (-2.5e3, "-2500.0", "-2500.0"),
        (1e16, "1e+16", "1e+16"),
        (-3, "-3", "-3"),
        (None, "null", "null"),
        (False, "false", "false"),
    ],
)
def test_scalar_spelling(value: Any, dsl: str, yaml: str) -> None:
    data = {"model": "m", "v": [value]}
    assert f"v = [{dsl}]" in to_dsl(data)
    assert f"v: [{yaml}]" in to_yaml(data)
    assert_same(dsl_round_trip(data), data)
    assert_same(yaml_round_trip(data), data)


def test_unrepresentable_shapes_fall_back_to_settings() -> None:
    data = {
        "model": 5,
        "vars": {},
        "define": {"x": [1]},
        "layers": [{"a": 1, "b": 2}],
        "a b": 1,
        "true": None,
    }
    text = to_dsl(data)
    assert "layers = [{a: 1, b: 2}]" in text and '"model" = 5' in text
    assert_same(dsl_round_trip(data), data)
    assert_same(yaml_round_trip(data), data)
    for small in (
        {},
        {"model": "m"},
        {"model": "m", "layers": []},
        {"vars": {"a": 1}, "layers": []},
    ):
        assert_same(dsl_round_trip(small), small)
        assert_same(yaml_round_trip(small), small)


def test_rejects_what_specs_never_hold() -> None:
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError):
            to_dsl({"model": "m", "x": bad})
    with pytest.raises(ValueError):
        to_dsl(["not", "a", "mapping"])
    with pytest.raises(ValueError):
        to_dsl({"model": "m", "x": {1: 2}})


@pytest.mark.parametrize(
    ("item", "long"),
    [
        ("embed", "embed"),
        ({"norm": "rms"}, {"norm": {"kind": "rms"}}),
        ({"head": 3}, {"head": 3}),
        ({"unknown": 3}, {"unknown": 3}),
        ({"embed": None}, {"embed": {}}),
        ({"residual": [{"norm": "rms"}]}, {"residual": {"body": [{"norm": {"kind": "rms"}}]}}),
        ({"loop": {"steps": 2, "body": ["a"]}}, {"loop": {"steps": 2, "body": ["a"]}}),
        ({"a": 1, "b": 2}, {"a": 1, "b": 2}),
        (5, 5),
    ],
)
def test_normalize_layer_item(item: Any, long: Any) -> None:
    assert normalize_layer_item(item) == long
    assert normalize_layer_item(long) == long


# ---------------------------------------------------------------- property tests

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,8}", fullmatch=True)
TRICKY = (
    st.sampled_from(
        [
            "true",
            "false",
            "null",
            "model",
            "def",
            "let",
            "yes",
            "No",
            "on",
            "~",
            "",
            " ",
            "1e3",
            "1e-5",
            "0x1F",
            "1_000",
            ".inf",
            "inf",
            "nan",
            "12:30",
            "2020-01-01",
            "<<",
            "=",
            "-",
            "a: b",
            "a #b",
            "#x",
            "[x]",
            "{x}",
            "a,b",
            "'q'",
            '"q"',
            "back\\slash",
            "tab\t",
            "line\nbreak",
            "\u2028",
            "\x85",
            "\x7f",
            "\x00",
            "é",
            "\U0001f600",
            "${x}",
            "${d_model * 4}",
            "${a}${b}",
            "${",
            "cycle(2)",
            "last(1)",
            "f(-3)",
            "f(x)",
            "- a",
        ]
    )
    | NAMES
)
STRINGS = TRICKY | st.text(max_size=10)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-5, -2.5e3, 3e-4, 0.0, -0.0, 1e16, 1.5e-7])
    | STRINGS
)
KEYS = TRICKY | st.text(max_size=6)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
KINDS = (
    st.sampled_from(
        [
            "embed",
            "norm",
            "attention",
            "residual",
            "loop",
            "repeat",
            "head",
            "block",
            "my-block",
            "def",
            "a b",
        ]
    )
    | NAMES
)


def _items(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    body = st.lists(inner, max_size=3)
    params = st.dictionaries(NAMES | TRICKY, SCALARS, max_size=3)
    return st.builds(lambda k, b: {k: b}, KINDS, body) | st.builds(
        lambda k, p, b: {k: {**p, "body": b}}, KINDS, params, body
    )


ITEMS = st.recursive(
    KINDS
    | st.builds(lambda k, v: {k: v}, KINDS, SCALARS | st.dictionaries(KEYS, VALUES, max_size=3)),
    _items,
    max_leaves=8,
)
# Mostly layer items; now and then something the DSL cannot write as an item.
LAYER_LISTS = st.lists(ITEMS, max_size=4) | st.lists(ITEMS | VALUES, max_size=3)

ITEM_LISTS = st.lists(ITEMS, min_size=1, max_size=4)
SPECS = st.builds(
    lambda base, model, vars_, define, layers: {
        **base,
        **({"model": model} if model is not None else {}),
        **({"vars": vars_} if vars_ is not None else {}),
        **({"define": define} if define is not None else {}),
        **({"layers": layers} if layers is not None else {}),
    },
    st.dictionaries(KEYS, VALUES, max_size=4),
    st.none() | NAMES | NAMES | STRINGS | SCALARS,
    st.none()
    | st.dictionaries(NAMES, VALUES, min_size=1, max_size=3)
    | st.dictionaries(NAMES | TRICKY, VALUES, max_size=3)
    | VALUES,
    st.none()
    | st.dictionaries(NAMES, ITEM_LISTS, min_size=1, max_size=2)
    | st.dictionaries(NAMES | TRICKY, LAYER_LISTS, max_size=2)
    | VALUES,
    st.none() | ITEM_LISTS | ITEM_LISTS | LAYER_LISTS | VALUES,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPECS)
def test_dsl_round_trip_property(data: dict[str, Any]) -> None:
    once, locs = parse_dsl(to_dsl(data), "rt.arch")
    assert_same(once, data)
    assert_located(once, locs)
    assert to_dsl(once) == to_dsl(data)  # canonical: printing is a fixed point


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPECS)
def test_yaml_round_trip_property(data: dict[str, Any]) -> None:
    once = yaml_round_trip(data)
    assert_same(once, data)
    assert_same(yaml_round_trip(dsl_round_trip(once)), data)
