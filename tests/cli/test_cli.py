"""The `archc` command line, in-process (`archc.cli.run`) and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archc import cli
from archc.cli import run

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["check", "fmt", "compile", "info", "graph", "bench"]

GOOD_YAML = """\
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
"""

GOOD_DSL = """\
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
"""

BAD_YAML = """\
model: bad
vocab: 256
d_model: 64
layers:
  - embed
  - attention: {heads: 6}
  - head
"""


@pytest.fixture
def specs(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in (("good.yaml", GOOD_YAML), ("good.arch", GOOD_DSL), ("bad.yaml", BAD_YAML)):
        (tmp_path / name).write_text(text)
        out[name.replace(".", "_")] = tmp_path / name
    return out


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCHC_DEBUG", raising=False)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ARCHC_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _archc(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archc", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(**env),
        timeout=180,
        check=False,
    )


def _run(*args: str) -> tuple[int, str]:
    msgs: list[str] = []
    code = run(list(args), handler=msgs.append)
    return code, "\n".join(msgs)


# -- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exc:
        run(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: archc")
    if command is not None:
        assert command in out.splitlines()[0]


def test_python_dash_m_help() -> None:
    res = _archc("--help")
    assert res.returncode == 0, res.stderr
    assert "usage: archc" in res.stdout
    for command in COMMANDS:
        assert command in res.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("archc ")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# -- check ----------------------------------------------------------------------------------


def test_check_good(specs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run("check", str(specs["good_yaml"]), str(specs["good_arch"]))
    assert code == 0, err
    out = capsys.readouterr().out
    assert out.count(": ok (gpt-tiny, ") == 2


def test_check_quiet(specs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("check", "-q", str(specs["good_yaml"]))[0] == 0
    assert capsys.readouterr().out == ""


def test_check_bad_subprocess(specs: dict[str, Path]) -> None:
    res = _archc("check", "bad.yaml", cwd=specs["bad_yaml"].parent)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("bad.yaml:6:24: error: attention heads=6 do not divide")
    assert "^" in res.stderr


def test_check_good_subprocess(specs: dict[str, Path]) -> None:
    res = _archc("check", str(specs["good_yaml"]))
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""


def test_check_reports_every_file(
    specs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad spec among good ones: the good ones still pass, the status is 2."""
    code, err = _run("check", str(specs["good_yaml"]), str(specs["bad_yaml"]))
    assert code == 2
    assert "do not divide the width 64" in err
    assert "good.yaml: ok" in capsys.readouterr().out


def test_debug_reraises(specs: dict[str, Path]) -> None:
    res = _archc("check", str(specs["bad_yaml"]), ARCHC_DEBUG="1")
    assert res.returncode == 1
    assert "Traceback" in res.stderr
    assert "DiagnosticError" in res.stderr


def test_missing_file(tmp_path: Path) -> None:
    code, err = _run("check", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "no such spec file" in err and "nope.yaml" in err
    res = _archc("compile", "nope.yaml", cwd=tmp_path)
    assert res.returncode == 2
    assert "no such spec file: nope.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def test_directory_is_not_a_spec(tmp_path: Path) -> None:
    code, err = _run("check", str(tmp_path))
    assert code == 2
    assert "is a directory" in err


def test_internal_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, specs: dict[str, Path]
) -> None:
    def boom(args: object) -> int:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "cmd_check", boom)
    code, err = _run("check", str(specs["good_yaml"]))
    assert code == 1
    assert err.splitlines()[0] == "archc: internal error: RuntimeError: kaboom"
    assert "Traceback" not in err
    monkeypatch.setenv("ARCHC_DEBUG", "1")
    with pytest.raises(RuntimeError, match="kaboom"):
        run(["check", str(specs["good_yaml"])])


@pytest.mark.parametrize("command", ["check", "fmt"])
def test_check_and_fmt_do_not_import_torch(command: str, specs: dict[str, Path]) -> None:
    spec = specs["good_yaml"] if command == "check" else specs["good_arch"]
    extra = ", '--to', 'yaml'" if command == "fmt" else ""
    code = (
        "import sys; from archc.cli import run; "
        f"rc = run([{command!r}, {str(spec)!r}{extra}]); "
        "assert rc == 0, rc; "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
        "assert not bad, bad[:5]"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr


# -- fmt ------------------------------------------------------------------------------------


def test_fmt_converts_both_ways(specs: dict[str, Path], tmp_path: Path) -> None:
    import archc

    to_dsl, to_yaml = tmp_path / "out.arch", tmp_path / "out.yaml"
    assert _run("fmt", str(specs["good_yaml"]), "--to", "dsl", "-o", str(to_dsl))[0] == 0
    assert to_dsl.read_text().startswith("model gpt-tiny(")
    assert _run("fmt", str(to_dsl), "--to", "yaml", "-o", str(to_yaml))[0] == 0
    assert "model: gpt-tiny" in to_yaml.read_text()
    want = archc.load(specs["good_yaml"]).semantic_dump()
    assert archc.load(to_dsl).semantic_dump() == want
    assert archc.load(to_yaml).semantic_dump() == want


def test_fmt_in_place(tmp_path: Path) -> None:
    spec = tmp_path / "messy.yaml"
    spec.write_text("model:   messy\nd_model:  8\nlayers:   [  norm  ]\n")
    assert _run("fmt", "-i", str(spec))[0] == 0
    once = spec.read_text()
    assert once != "model:   messy\nd_model:  8\nlayers:   [  norm  ]\n"
    assert _run("fmt", "-i", str(spec))[0] == 0
    assert spec.read_text() == once  # idempotent


def test_fmt_refuses_invalid(specs: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("model: t\nd_model: 8\nlayers: [nrom]\n")
    code, err = _run("fmt", str(bad))
    assert code == 2
    assert "did you mean 'norm'" in err


# -- compile --------------------------------------------------------------------------------


def test_compile_emit_ir_stdout(specs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("compile", str(specs["good_yaml"]), "--emit", "ir")[0] == 0
    out = capsys.readouterr().out
    assert out.startswith("graph gpt-tiny {")
    assert "attention(" in out


def test_compile_emit_ir_file(specs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "g.ir"
    assert _run("compile", str(specs["good_yaml"]), "--emit", "ir", "-o", str(out))[0] == 0
    text = out.read_text()
    assert text.startswith("graph gpt-tiny {")
    # The same graph from the DSL spelling.
    out2 = tmp_path / "g2.ir"
    assert _run("compile", str(specs["good_arch"]), "--emit", "ir", "-o", str(out2))[0] == 0
    assert out2.read_text() == text


def test_compile_emit_dot(specs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("compile", str(specs["good_yaml"]), "--emit", "dot")[0] == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "gpt-tiny" {')
    assert out.rstrip().endswith("}")


def test_compile_emit_torch(specs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model.py"
    assert _run("compile", str(specs["good_yaml"]), "--emit", "torch", "-o", str(out))[0] == 0
    compile(out.read_text(), str(out), "exec")  # valid Python


def test_compile_summary(specs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    import archc

    assert _run("compile", str(specs["good_yaml"]))[0] == 0
    out = capsys.readouterr().out
    params = archc.compile(specs["good_yaml"]).num_parameters()
    assert out.startswith("model gpt-tiny")
    assert f"parameters  {params:,}" in out


def test_compile_bad_spec(specs: dict[str, Path]) -> None:
    code, err = _run("compile", str(specs["bad_yaml"]), "--emit", "ir")
    assert code == 2
    assert "do not divide" in err


def test_compile_needs_one_spec(specs: dict[str, Path]) -> None:
    code, err = _run("compile", str(specs["good_yaml"]), str(specs["good_arch"]))
    assert code == 2
    assert "expected one spec file, got 2" in err


# -- info -----------------------------------------------------------------------------------


def _info(*args: str, capsys: pytest.CaptureFixture[str]) -> dict:
    code, err = _run("info", *args, "--json")
    assert code == 0, err
    return json.loads(capsys.readouterr().out)


def test_info_json(specs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    import archc

    info = _info(str(specs["good_yaml"]), capsys=capsys)
    for key in (
        "parameters",
        "forward_flops_per_token",
        "state_bytes_per_sequence",
        "kv_cache_bytes_per_token",
        "layers",
    ):
        assert key in info, key
    assert info["parameters"] == archc.compile(specs["good_yaml"]).num_parameters()
    assert info["forward_flops_per_token"] > 0
    assert info["kv_cache_bytes_per_token"] > 0  # attention keeps a KV cache
    assert info["state_bytes_per_sequence"] == 0  # ... and no recurrent state


def test_info_overrides_change_the_result(
    specs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import archc

    base = _info(str(specs["good_yaml"]), capsys=capsys)
    small = _info(str(specs["good_yaml"]), "d_model=32", capsys=capsys)
    assert small["parameters"] < base["parameters"]
    assert small["parameters"] == archc.compile(specs["good_yaml"], ["d_model=32"]).num_parameters()
    deeper = _info(str(specs["good_yaml"]), "layers[1].repeat.n=3", capsys=capsys)
    assert deeper["layers"] > base["layers"]


def test_info_seq_len(specs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    short = _info(str(specs["good_yaml"]), "--seq-len", "16", capsys=capsys)
    long = _info(str(specs["good_yaml"]), "--seq-len", "4096", capsys=capsys)
    assert short["parameters"] == long["parameters"]
    assert long["forward_flops_per_token"] > short["forward_flops_per_token"]


def test_info_table(specs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("info", str(specs["good_arch"]))[0] == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "KV-cache bytes / token" in out


def test_bad_override(specs: dict[str, Path]) -> None:
    code, err = _run("info", str(specs["good_yaml"]), "layers[9].norm=rms")
    assert code == 2
    assert err.startswith("<override 1>:1:1: error: override path layers[9] does not exist")
    code, err = _run("check", str(specs["good_yaml"]), "d_model=-4")
    assert code == 2
    assert "d_model: Input should be greater than 0" in err


# -- graph ----------------------------------------------------------------------------------


def test_graph_dot(specs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "g.dot"
    assert _run("graph", str(specs["good_yaml"]), "-o", str(out))[0] == 0
    text = out.read_text()
    assert text.startswith('digraph "gpt-tiny" {')
    assert "->" in text


def test_graph_svg(specs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    code, err = _run("graph", str(specs["good_yaml"]), "-o", str(out))
    if code == 0:  # Graphviz is installed
        assert "<svg" in out.read_text()
    else:
        assert code == 2
        assert "Graphviz" in err
        assert "g.dot" in err  # the hint says how to get DOT instead
        assert not out.exists()


def test_graph_svg_without_graphviz(
    specs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    code, err = _run("graph", str(specs["good_yaml"]), "-o", str(tmp_path / "g.svg"))
    assert code == 2
    assert err.startswith("error: Graphviz 'dot' is not installed")
