"""Fuzzing the frontends: mutated spec text fails only with located diagnostics.

Valid YAML and DSL specs are mutated (characters and lines deleted, inserted,
duplicated and swapped; hostile tokens such as `{`, `${`, `!!python/`, `&a`/`*a`,
tabs, unicode, huge and negative numbers spliced in) and run through the whole
frontend up to the verified IR. The only exception ever allowed is DiagnosticError,
whose diagnostics each render as `file:line:col: severity: message` when located.
Examples are derandomized so CI sees the same inputs on every run.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context, event

from archc.diagnostics import DiagnosticError
from archc.frontend.interp import InterpError, interpolate
from archc.frontend.resolve import load_spec
from archc.ir.build import build_graph
from archc.ir.graph import Graph
from archc.ir.verify import verify

YAML_SPECS = [
    """\
model: gpt-tiny
vocab: 256
d_model: 64
define:
  block:
    - residual: [{norm: rms}, {attention: {heads: 4, pos: rope}}]
    - residual: [{norm: rms}, {mlp: {mult: 4, act: swiglu}}]
layers:
  - embed
  - repeat: {n: 2, body: [block]}
  - norm: rms
  - head: {tied: true}
""",
    """\
model: looped
vocab: 128
d_model: 32
vars:
  ffn: ${d_model * 2}
  steps: 3
layers:
  - embed: {}
  - posenc: {kind: sinusoidal, max_len: 512}
  - loop:
      steps: ${steps}
      tie: cycle(2)
      body:
        - residual:
            - norm: {kind: layer, eps: 1e-6}
            - attention: {heads: 2, kv_heads: 1, window: 16}
        - residual: [{norm: rms}, {mlp: {hidden: "${ffn}", act: gelu, dropout: 0.1}}]
  - norm: layer
  - head: {bias: true}
""",
    """\
model: recurrent
d_model: 16
layers:
  - linear: 24
  - conv1d: {kernel: 3, groups: depthwise, out: 48}
  - act: silu
  - gru: {hidden: 16, layers: 2}
  - residual:
      - lstm: 16
      - dropout: 0.0
  - rnn: {act: relu}
  - linear: {out: 8, bias: false}
""",
]

DSL_SPECS = [
    """\
model gpt-tiny(vocab=256, d_model=64) {
  def block {
    residual { norm(rms); attention(heads=4, pos=rope) }
    residual { norm(rms); mlp(mult=4, act=swiglu) }
  }
  embed
  repeat(2) { block }
  norm(rms)
  head(tied=true)
}
""",
    """\
model looped(vocab=128, d_model=32) {
  let ffn = ${d_model * 2}
  let steps = 3
  embed
  posenc(kind=sinusoidal, max_len=512)
  loop(steps=${steps}, tie="cycle(2)") {
    residual { norm(kind=layer, eps=1e-6); attention(heads=2, kv_heads=1, window=16) }
    residual { norm(rms); mlp(hidden=${ffn}, act=gelu, dropout=0.1) }
  }
  norm(layer)
  head(bias=true)
}
""",
    """\
model recurrent(d_model=16) {
  # a feature model: no embed, no head
  linear(24)
  conv1d(kernel=3, groups=depthwise, out=48)
  act(silu)
  gru(hidden=16, layers=2)
  residual { lstm(16); dropout(0.0) }
  rnn(act=relu)
  linear(out=8, bias=false)
}
""",
]

TOKENS = [
    "{", "}", "[", "]", "(", ")", ":", ",", ";", "=", "-", "- ", "#", "|", ">", "?", "'", '"',
    "\n", "\n  ", "\t", " ", "${", "}", "${d_model", "${d_model * 0}", "${1/0}", "${x}",
    "${__import__('os')}", "!!python/object/apply:os.system ['true']", "!!python/name:os.system",
    "!!str", "!!binary", "!custom", "&a", "*a", "&a [1, 2]", "*b", "<<: *a", "---", "...",
    "%YAML 1.2", "\u00e9", "\u202e", "\U0001d518", "\u3000", "\ufeff", "\x00", "\x1b", "\r",
    "99999999999999999999999999999", "1e308", "1e999", "-1", "-0", "0", "-99999999999",
    "0x1F", "1_000", ".inf", "-.inf", ".nan", "NaN", "null", "~", "true", "yes", "no",
    "model", "def", "let", "layers", "define", "vars", "extends", "body", "embed", "head",
    "residual", "loop", "repeat", "attention", "heads", "mlp", "norm", "rms", "tied",
    "extends: x.yaml\n", "extends = \"x.arch\"\n",
]  # fmt: skip

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
NUMBERS = ["0", "-1", "-64", "7", "3", "1e999", "99999999999999999999", "0.5", "-0.0", "1e-9"]


EDITS = (
    "del_char",
    "ins_char",
    "ins_token",
    "dup_span",
    "swap_chars",
    "del_line",
    "dup_line",
    "swap_lines",
    "number",
    "word",
)
# Edits that keep the text well-formed more often, so the IR builder sees more specs.
MILD_EDITS = ("number", "name", "number", "name", "del_line", "dup_line", "swap_lines")
NAMES = [
    "embed", "head", "norm", "rms", "layer", "mlp", "attention", "linear", "act", "gelu",
    "swiglu", "dropout", "conv1d", "lstm", "gru", "rnn", "posenc", "block", "residual", "seq",
    "true", "false", "causal", "none", "rope", "depthwise", "relu", "tanh",
]  # fmt: skip


@st.composite
def _mutate(draw: st.DrawFn, text: str, edits: tuple[str, ...] = EDITS) -> str:
    """Apply 1-4 random edits to `text`."""
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(edits))
        n = len(text)
        lines = text.split("\n")
        if op == "del_char" and n:
            i = draw(st.integers(0, n - 1))
            j = draw(st.integers(i + 1, min(n, i + 8)))
            text = text[:i] + text[j:]
        elif op == "ins_char":
            i = draw(st.integers(0, n))
            text = text[:i] + draw(st.characters(codec="utf-8")) + text[i:]
        elif op == "ins_token":
            i = draw(st.integers(0, n))
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif op == "dup_span" and n:
            i = draw(st.integers(0, n - 1))
            j = draw(st.integers(i, min(n, i + 40)))
            text = text[:j] + text[i:j] + text[j:]
        elif op == "swap_chars" and n >= 2:
            i, j = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2)))
            chars = list(text)
            chars[i], chars[j] = chars[j], chars[i]
            text = "".join(chars)
        elif op == "del_line" and lines:
            del lines[draw(st.integers(0, len(lines) - 1))]
            text = "\n".join(lines)
        elif op == "dup_line" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
            text = "\n".join(lines)
        elif op == "swap_lines" and len(lines) >= 2:
            i, j = draw(st.lists(st.integers(0, len(lines) - 1), min_size=2, max_size=2))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == "number":
            found = list(NUMBER.finditer(text))
            if found:
                m = draw(st.sampled_from(found))
                text = text[: m.start()] + draw(st.sampled_from(NUMBERS)) + text[m.end() :]
        elif op == "word":
            words = list(re.finditer(r"[A-Za-z_]+", text))
            if words:
                m = draw(st.sampled_from(words))
                text = text[: m.start()] + draw(st.sampled_from(TOKENS)) + text[m.end() :]
        elif op == "name":
            words = [m for m in re.finditer(r"\b[a-z][a-z0-9]*\b", text) if m[0] in NAMES]
            if words:
                m = draw(st.sampled_from(words))
                text = text[: m.start()] + draw(st.sampled_from(NAMES)) + text[m.end() :]
    return text


def _mutated(bases: list[str], edits: tuple[str, ...] = EDITS) -> st.SearchStrategy[str]:
    return st.sampled_from(bases).flatmap(lambda t: _mutate(t, edits))


FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)


def _check_diagnostics(exc: DiagnosticError, name: str) -> None:
    assert exc.diagnostics, "a DiagnosticError without diagnostics"
    text = exc.render()
    assert "Traceback" not in text
    for d in exc.diagnostics:
        out = d.render()
        assert d.message.strip(), d
        assert d.severity in ("error", "note", "warning")
        if d.loc is not None:
            assert d.loc.line >= 1 and d.loc.col >= 1, d
            assert d.loc.file == name, d  # every location is in the spec itself
            assert out.startswith(f"{name}:{d.loc.line}:{d.loc.col}: {d.severity}: "), out


def _event(what: str) -> None:
    if currently_in_test_context():  # outcome shares: --hypothesis-show-statistics
        event(what)


@pytest.fixture(autouse=True, scope="module")
def _small_ir_bound() -> Iterator[None]:
    """Mutated repeat counts must hit the builder's unroll bound fast, not build 200k nodes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHC_MAX_IR_NODES", "20000")
        yield


def _pipeline(name: str, text: str) -> Graph | None:
    """Load -> IR -> verify; None when the spec is (correctly) rejected."""
    try:
        spec = load_spec(name, text=text)
    except DiagnosticError as exc:
        _check_diagnostics(exc, name)
        _event("rejected while loading")
        return None
    # A spec that loads must build (or be rejected with diagnostics) and verify.
    try:
        graph = build_graph(spec)
    except DiagnosticError as exc:
        _check_diagnostics(exc, name)
        _event("loaded, rejected by the IR builder")
        return None
    _event("loaded and verified")
    verify(graph)  # a VerifyError here is a compiler bug, not a user mistake
    return graph


BASES = {f"base{i}.yaml": t for i, t in enumerate(YAML_SPECS)} | {
    f"base{i}.arch": t for i, t in enumerate(DSL_SPECS)
}


@pytest.mark.parametrize("name", sorted(BASES))
def test_base_specs_are_valid(name: str) -> None:
    assert _pipeline(name, BASES[name]) is not None


def test_yaml_and_dsl_bases_agree() -> None:
    for y, d in zip(YAML_SPECS, DSL_SPECS, strict=True):
        a = load_spec("a.yaml", text=y).semantic_dump()
        b = load_spec("b.arch", text=d).semantic_dump()
        assert a == b


@FUZZ
@given(_mutated(YAML_SPECS))
def test_fuzz_yaml(text: str) -> None:
    _pipeline("fuzz.yaml", text)


@FUZZ
@given(_mutated(DSL_SPECS))
def test_fuzz_dsl(text: str) -> None:
    _pipeline("fuzz.arch", text)


@FUZZ
@given(_mutated(YAML_SPECS))
def test_fuzz_yaml_text_as_dsl(text: str) -> None:
    """The wrong frontend for the text: still only diagnostics."""
    _pipeline("fuzz.arch", text)


@FUZZ
@given(_mutated(YAML_SPECS, MILD_EDITS))
def test_fuzz_yaml_mild(text: str) -> None:
    """Specs that load must build an IR that verifies (or be rejected with diagnostics)."""
    _pipeline("mild.yaml", text)


@FUZZ
@given(_mutated(DSL_SPECS, MILD_EDITS))
def test_fuzz_dsl_mild(text: str) -> None:
    _pipeline("mild.arch", text)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _pipeline("noise.yaml", text)
    _pipeline("noise.arch", text)


# -- ${...} arithmetic that must end in a diagnostic, not an internal error -----------------


def _interp_spec(expr: str) -> str:
    return (
        "model: x\nvocab: 256\nd_model: 64\nlayers:\n  - embed\n"
        f'  - attention: {{heads: "${{{expr}}}"}}\n  - head\n'
    )


@pytest.mark.parametrize(
    "expr",
    [
        "2 ** 64 ** 2",
        "1 / 0",
        "max()",
        "-'x'",
        "'a' + 1",
        "1e308 * 10",
        "int(1e308 * 10)",
        "round(1e400)",
        "(10 ** 6) ** 64 / 1",
    ],
)
def test_interp_errors_are_diagnostics(expr: str) -> None:
    with pytest.raises(DiagnosticError):
        load_spec("interp.yaml", text=_interp_spec(expr))


def test_interp_string_arithmetic_is_refused() -> None:
    """`'ab' * 10**10` once tried to build a 20 GB string."""
    with pytest.raises(InterpError):
        interpolate("${'ab' * 10 ** 10}", lambda name: 0)
    with pytest.raises(DiagnosticError, match=r"interp\.yaml:6:24: error: "):
        load_spec("interp.yaml", text=_interp_spec("'ab' * 10 ** 10"))


def _limit_memory() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize(
    "layer",
    [
        "repeat: {n: 1000000000, body: [norm]}",
        "loop: {steps: 1000000000, tie: none, body: [norm]}",
        "repeat: {n: 100000, body: [{repeat: {n: 100000, body: [norm]}}]}",
    ],
)
def test_huge_unroll_is_a_diagnostic(layer: str, tmp_path: Path) -> None:
    """Unrolling is bounded (ARCHC_MAX_IR_NODES); it once ran until memory ran out.

    Run in a child with capped memory so that a regression cannot take the machine down.
    """
    spec = tmp_path / "huge.yaml"
    spec.write_text(f"model: x\nd_model: 8\nlayers:\n  - {layer}\n")
    try:
        res = subprocess.run(
            [sys.executable, "-m", "archc", "check", spec.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("archc check was still unrolling after 60 s")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.startswith("huge.yaml:4:"), res.stderr[-2000:]
    assert "unrolls into more than" in res.stderr
