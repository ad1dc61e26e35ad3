"""The DSL frontend: every construct, locations, syntax errors and the depth bound."""

from __future__ import annotations

import time
from typing import Any

import pytest
from example_spec_data import EXAMPLE_DATA

from archc.diagnostics import DiagnosticError, SourceLoc
from archc.frontend.dsl import parse_dsl
from archc.frontend.format import normalize_layer_item
from archc.frontend.yaml import load_yaml

EXAMPLE = """\
# comment to end of line
model gpt-tiny(vocab=256, d_model=128) {
  extends = "base.arch"          # any other top-level key: KEY = VALUE
  train = {lr: 3e-4, steps: 100} # maps/lists are values too
  let ffn = ${d_model * 4}       # -> data["vars"]["ffn"] = "${d_model * 4}"
  def block {                    # -> data["define"]["block"] = [items]
    residual { norm(rms); attention(heads=4, pos=rope) }
    residual { norm(rms); mlp(mult=4, act=swiglu) }
  }
  embed
  repeat(4) { block }
  loop(steps=2, tie=cycle(2)) { block; block }
  norm(rms)
  head(tied=true)
}
"""


def parse(text: str) -> Any:
    return parse_dsl(text, "t.arch")[0]


def layers(body: str) -> list[Any]:
    return parse(f"model m {{\n{body}\n}}")["layers"]


def errors(text: str, filename: str = "e.arch") -> list[str]:
    with pytest.raises(DiagnosticError) as info:
        parse_dsl(text, filename)
    return [f"{d.loc}: {d.message}" for d in info.value.diagnostics]


def test_example_parses_to_the_documented_data() -> None:
    assert parse(EXAMPLE) == EXAMPLE_DATA


def test_example_equals_yaml_after_normalisation() -> None:
    yaml_text = """\
model: gpt-tiny
vocab: 256
d_model: 128
extends: base.arch
train: {lr: 3e-4, steps: 100}
vars: {ffn: "${d_model * 4}"}
define:
  block:
    - residual: {body: [{norm: {kind: rms}}, {attention: {heads: 4, pos: rope}}]}
    - residual: [{norm: rms}, {mlp: {mult: 4, act: swiglu}}]
layers:
  - embed
  - repeat: {n: 4, body: [block]}
  - loop: {steps: 2, tie: cycle(2), body: [block, block]}
  - norm: {kind: rms}
  - head: {tied: true}
"""
    ydata = load_yaml(yaml_text, "t.yaml")[0]
    ddata = parse(EXAMPLE)

    def norm(d: dict[str, Any]) -> dict[str, Any]:
        out = dict(d)
        out["layers"] = [normalize_layer_item(i) for i in d["layers"]]
        out["define"] = {k: [normalize_layer_item(i) for i in v] for k, v in d["define"].items()}
        return out

    assert norm(ddata) == norm(ydata)


@pytest.mark.parametrize(
    ("src", "item"),
    [
        ("embed", "embed"),
        ("norm(rms)", {"norm": "rms"}),
        ("embed()", {"embed": {}}),
        ("attention(heads=4, pos=rope)", {"attention": {"heads": 4, "pos": "rope"}}),
        ("attention(4, pos=rope)", {"attention": {"heads": 4, "pos": "rope"}}),
        ("residual { norm; mlp }", {"residual": ["norm", "mlp"]}),
        ("residual {}", {"residual": []}),
        ("repeat(3) { block }", {"repeat": {"n": 3, "body": ["block"]}}),
        ("seq() { a }", {"seq": {"body": ["a"]}}),
        ("loop(steps=2) {\n a\n\n b\n}", {"loop": {"steps": 2, "body": ["a", "b"]}}),
        ('"odd name"', "odd name"),
        ('"def"(x=1)', {"def": {"x": 1}}),
        ("custom_block(x=[1, 2])", {"custom_block": {"x": [1, 2]}}),
        ("mine([1, 2])", {"mine": [1, 2]}),
        ("head(null)", {"head": None}),
        ("norm(\n  kind=rms,\n  eps=1e-6,\n)", {"norm": {"kind": "rms", "eps": 1e-6}}),
    ],
)
def test_item_forms(src: str, item: Any) -> None:
    assert layers(src) == [item]


@pytest.mark.parametrize(
    ("src", "value"),
    [
        ("0", 0),
        ("-17", -17),
        ("12345678901234567890", 12345678901234567890),
        ("0.1", 0.1),
        ("1e-5", 1e-5),
        ("-2.5E3", -2500.0),
        ("1.", 1.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"a b"', "a b"),
        (r'"tab\tquote\" uni\u00e9 slash\/"', 'tab\tquote" uni\u00e9 slash/'),
        ('""', ""),
        ("rope", "rope"),
        ("gpt-2.small_x", "gpt-2.small_x"),
        ("${d_model * 4}", "${d_model * 4}"),
        ("${a.b}", "${a.b}"),
        ("cycle(2)", "cycle(2)"),
        ("last(-1)", "last(-1)"),
        ("[]", []),
        ("{}", {}),
        ("[1, [2, 3], {a: b}]", [1, [2, 3], {"a": "b"}]),
        (
            '{a: 1, "quoted key": 2, true: 3, model: 4,}',
            {"a": 1, "quoted key": 2, "true": 3, "model": 4},
        ),
        ("[\n  1,\n\n  # comment\n  2\n]", [1, 2]),
        ("{\n  a: 1\n  ,\n  b:\n    2\n}", {"a": 1, "b": 2}),
    ],
)
def test_values(src: str, value: Any) -> None:
    data = parse(f"model m {{\n  v = {src}\n}}")
    assert data["v"] == value
    assert type(data["v"]) is type(value)


def test_settings_lets_defs_and_header() -> None:
    data = parse(
        'model "my model"(a=1, "b c"=2) {\n'
        "  x = 3; let p = 1; let q = ${p}\n"
        '  "true" = [1]\n'
        "  def one {}\n"
        "  def two { a; b }\n"
        "}"
    )
    assert data == {
        "model": "my model",
        "a": 1,
        "b c": 2,
        "x": 3,
        "true": [1],
        "vars": {"p": 1, "q": "${p}"},
        "define": {"one": [], "two": ["a", "b"]},
    }


def test_layers_key_presence() -> None:
    assert parse("model m {}") == {"model": "m", "layers": []}
    assert parse("model m") == {"model": "m"}
    assert parse("model m(a=1)\n") == {"model": "m", "a": 1}
    assert parse("model m { let a = 1 }") == {"model": "m", "vars": {"a": 1}}
    assert parse("model m { layers = [] }") == {"model": "m", "layers": []}
    assert parse("model {\n  embed\n}") == {"layers": ["embed"]}


def test_separators_comments_and_crlf() -> None:
    text = "# head\r\n\r\nmodel m { # c\r\n  a;;b\r\n  # only a comment\r\n  ; c\r\n}\r\n# tail"
    assert parse(text)["layers"] == ["a", "b", "c"]


def test_locations() -> None:
    text = (
        "model m(d_model=64) {\n  embed; norm(rms)\n  attention(heads=4)\n  repeat(2) {\n"
        "    block\n  }\n  let x = [1, {k: 2}]\n}"
    )
    _, locs = parse_dsl(text, "a.arch")

    def at(line: int, col: int, end: int | None = None) -> SourceLoc:
        return SourceLoc("a.arch", line, col, end)

    v, k = locs.values, locs.keys
    assert v[()] == at(1, 1)
    assert k[("model",)] == at(1, 1, 6) and v[("model",)] == at(1, 7, 8)
    assert k[("d_model",)] == at(1, 9, 16) and v[("d_model",)] == at(1, 17, 19)
    assert v[("layers", 0)] == at(2, 3, 8)
    assert v[("layers", 1)] == at(2, 10, 19)
    assert k[("layers", 1, "norm")] == at(2, 10, 14)
    assert v[("layers", 1, "norm")] == at(2, 15, 18)
    assert v[("layers", 2)] == at(3, 3, 21)
    assert k[("layers", 2, "attention")] == at(3, 3, 12)
    assert v[("layers", 2, "attention")] == at(3, 12, 21)
    assert k[("layers", 2, "attention", "heads")] == at(3, 13, 18)
    assert v[("layers", 2, "attention", "heads")] == at(3, 19, 20)
    assert k[("layers", 3, "repeat")] == at(4, 3, 9)
    assert v[("layers", 3, "repeat")] == at(4, 9, 12)
    assert k[("layers", 3, "repeat", "n")] == at(4, 10, 11)
    assert v[("layers", 3, "repeat", "n")] == at(4, 10, 11)
    assert k[("layers", 3, "repeat", "body")] == at(4, 13)
    assert v[("layers", 3, "repeat", "body", 0)] == at(5, 5, 10)
    assert k[("vars",)] == at(7, 3, 6) and k[("vars", "x")] == at(7, 7, 8)
    assert v[("vars", "x")] == at(7, 11, 22)
    assert v[("vars", "x", 1)] == at(7, 15, 21)
    assert k[("vars", "x", 1, "k")] == at(7, 16, 17)
    assert v[("vars", "x", 1, "k")] == at(7, 19, 20)


def test_every_value_and_key_has_a_location() -> None:
    data, locs = parse_dsl(EXAMPLE, "x.arch")

    def walk(node: Any, path: tuple) -> None:
        assert path in locs.values, path
        if isinstance(node, dict):
            for key, sub in node.items():
                assert (*path, key) in locs.keys, (*path, key)
                walk(sub, (*path, key))
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, (*path, i))

    walk(data, ())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model m {\n  embed\n}\n}", ["e.arch:4:1: unmatched '}'"]),
        (
            "model m {\n  attention(heads=4\n  mlp\n}",
            ["e.arch:2:12: unclosed '(': found '}' at 4:1 before its ')'"],
        ),
        (
            "model m {\n  embed\n",
            ["e.arch:1:9: unclosed '{': expected '}' before the end of the file"],
        ),
        (
            "model m {\n  embed norm\n}",
            ["e.arch:2:9: unexpected 'norm'; expected '(', '{', '=', ';', '}' or a newline"],
        ),
        ("model m {\n  x =\n  y = 1\n}", ["e.arch:2:6: unexpected newline; expected a value"]),
        (
            "model m {\n  a(x=1,, y=2)\n  b(1 2)\n}",
            [
                "e.arch:2:9: unexpected ','; expected a value or ')'",
                "e.arch:3:7: unexpected '2'; expected ',' or ')'",
            ],
        ),
        (
            "model m {\n  residual { let a = 1 }\n}",
            ["e.arch:2:14: unexpected 'let'; expected a layer, ';', '}' or a newline"],
        ),
        ("model m {} extra", ["e.arch:1:12: unexpected 'extra'; expected the end of the file"]),
        (
            'model m {\n  a = "abc\n}',
            ["e.arch:2:7: unterminated string or invalid escape in string"],
        ),
        ("model m {\n  a = @\n}", ["e.arch:2:7: unexpected character '@'"]),
        ("model m {\n  a = cycle(x)\n}", ["e.arch:2:13: unexpected 'x'; expected an integer"]),
        ("", ["e.arch:1:1: spec is empty"]),
        ("# nothing\n\n", ["e.arch:1:1: spec is empty"]),
        ("embed\n", ["e.arch:1:1: unexpected 'embed'; expected 'model'"]),
    ],
)
def test_syntax_errors(text: str, expected: list[str]) -> None:
    assert errors(text) == expected


def test_syntax_error_rendering_has_caret_and_no_lark_internals() -> None:
    with pytest.raises(DiagnosticError) as info:
        parse_dsl("model m {\n  attention(heads=4,, pos=rope)\n}", "r.arch")
    text = str(info.value)
    assert text == (
        "r.arch:2:21: error: unexpected ','; expected a value or ')'\n"
        "    attention(heads=4,, pos=rope)\n"
        "                      ^"
    )
    assert "Token" not in text and "Expected one of" not in text


def test_keyword_hints() -> None:
    with pytest.raises(DiagnosticError) as info:
        parse_dsl("model m {\n  residual { def x {} }\n}", "h.arch")
    assert info.value.diagnostics[0].hint == (
        "'def' and 'let' are allowed only directly in the model body"
    )
    with pytest.raises(DiagnosticError) as info:
        parse_dsl("model m {\n  let null = 1\n}", "h.arch")
    assert (
        info.value.diagnostics[0].hint == "'null' is a keyword; write \"null\" to use it as a name"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model m(a=1) {\n  a = 2\n}", "e.arch:2:3: duplicate key 'a'"),
        ("model m {\n  x = {k: 1, k: 2}\n}", "e.arch:2:14: duplicate key 'k'"),
        ("model m {\n  attention(heads=1, heads=2)\n}", "e.arch:2:22: duplicate argument 'heads'"),
        ("model m {\n  attention(4, heads=2)\n}", "e.arch:2:16: duplicate argument 'heads'"),
        ("model m {\n  loop(body=[a]) { b }\n}", "e.arch:2:18: duplicate argument 'body'"),
        ("model m {\n  let a = 1\n  let a = 2\n}", "e.arch:3:7: duplicate variable 'a'"),
        ("model m {\n  def b {}\n  def b {}\n}", "e.arch:3:7: duplicate block 'b'"),
        (
            "model m {\n  let a = 1\n  vars = {}\n}",
            "e.arch:3:3: duplicate key 'vars' (set by 'let')",
        ),
        (
            "model m {\n  layers = []\n  embed\n}",
            "e.arch:3:3: 'layers' is already set at e.arch:2:3; it cannot also be built by layer "
            "items",
        ),
        (
            "model m {\n  head(1, tied=true)\n}",
            "e.arch:2:8: component 'head' takes no positional argument",
        ),
        (
            "model m {\n  blk(1) { a }\n}",
            "e.arch:2:7: component 'blk' takes no positional argument",
        ),
        (
            "model m {\n  norm(rms, layer)\n}",
            "e.arch:2:13: 'norm' takes at most one positional argument",
        ),
        ("model m(4) {}", "e.arch:1:9: the model header takes only name=value arguments"),
        ("model m {\n  x = 1e999\n}", "e.arch:2:7: number 1e999 is out of range"),
    ],
)
def test_semantic_errors(text: str, expected: str) -> None:
    assert errors(text) == [expected]


def test_all_semantic_errors_reported_at_once() -> None:
    text = "model m(a=1) {\n  a = 2\n  head(1) { a }\n  x = {k: 1, k: 2}\n}"
    assert [e.split(": ")[0] for e in errors(text)] == ["e.arch:2:3", "e.arch:3:8", "e.arch:4:14"]


def test_positional_hint_suggests_component() -> None:
    with pytest.raises(DiagnosticError) as info:
        parse_dsl("model m {\n  atention(4) { a }\n}", "h.arch")
    assert info.value.diagnostics[0].hint == "did you mean 'attention'?"


def test_depth_bound_is_fast_and_clear() -> None:
    for text in (
        "model m {\n  x = " + "[" * 10000 + "]" * 10000 + "\n}",
        "model m {" + "r {" * 10000 + "}" * 10001,
        "model m {\n  x = " + "{a: " * 10000,
    ):
        start = time.perf_counter()
        msgs = errors(text)
        assert time.perf_counter() - start < 0.5
        assert len(msgs) == 1 and msgs[0].endswith("spec nests deeper than 100 levels")
    assert errors("model m {\n  x = " + "[" * 101)[0].startswith(
        "e.arch:2:106:"
    )  # the model's '{' is level 1


def test_depth_limit_is_inclusive_and_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = "model m {" + "r {" * 99 + "}" * 100  # 100 levels
    assert parse(deep)["layers"][0] == {
        "r": [{"r": [{"r": parse("model m {" + "r {" * 96 + "}" * 97)["layers"]}]}]
    }
    monkeypatch.setenv("ARCHC_MAX_SPEC_DEPTH", "5")
    assert errors("model m { a { b { c { d { e {} } } } } }")[0] == (
        "e.arch:1:29: spec nests deeper than 5 levels"
    )


def test_brackets_in_strings_comments_and_interpolations_do_not_count() -> None:
    data = parse('model m {\n  a = "{{[(" # }}})\n  b = ${x[0]}\n}')
    assert data == {"model": "m", "a": "{{[(", "b": "${x[0]}"}
