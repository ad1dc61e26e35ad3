"""`archc compile` with pass pipelines: --passes / -O0 / -O2, --print-after-all,
--explain, located errors for bad pipelines; `archc info --passes`; and the
compile() / train path at -O2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import archc
from archc.cli import run
from archc.ir.printer import print_graph
from archc.passes.pipeline import O2, parse_pipeline

SPEC = """\
model: kern
vocab: 16
d_model: 8
layers:
  - embed
  - mingru: {hidden: 8}
  - lstm: {hidden: 128}
  - residual: [{norm: layer}, {mlp: {mult: 2, act: gelu}}]
  - head
train:
  task: {name: parity, n: 2}
  steps: 2
  batch_size: 4
  seq_len: 32
  eval_interval: 2
  checkpoint_interval: 2
"""
HEADER = re.compile(r"^// ----- IR after (\S+) \((changed|unchanged)\) -----$", re.M)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "kern.yaml"
    path.write_text(SPEC)
    return path


def _run(*argv: str) -> tuple[int, str]:
    messages: list[str] = []
    code = run(list(argv), handler=messages.append)
    return code, "\n".join(messages)


def test_O0_emits_the_graph_as_built(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("compile", str(spec), "-O0", "--emit", "ir")[0] == 0
    assert capsys.readouterr().out == print_graph(archc.to_graph(spec))


def test_O2_emits_the_optimized_graph(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("compile", str(spec), "--emit", "ir", "--seq-len", "64")[0] == 0
    out = capsys.readouterr().out
    # -O2 is the default: select-scan-mode fixed the minGRU for T=64, assign-kernels ran.
    assert "cell=mingru" in out and "mode=chunked" in out
    assert "kernel='torch: device is cpu, the kernels need CUDA'" in out


def test_print_after_all(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(
        "compile",
        str(spec),
        "--passes",
        "shapes,select-scan-mode{seq_len=64},assign-kernels",
        "--print-after-all",
    )
    assert code == 0, err
    out = capsys.readouterr().out
    assert HEADER.findall(out) == [
        ("shapes", "unchanged"),
        ("select-scan-mode", "changed"),
        ("assign-kernels", "changed"),
    ]
    bodies = [b.lstrip("\n") for b in HEADER.split(out)[3::3]]  # IR after each header
    assert all(b.startswith("graph kern {") for b in bodies)
    assert "mode=auto" in bodies[0] and "mode=chunked" in bodies[1]
    assert "kernel=" not in bodies[1] and "kernel=" in bodies[2]


def test_print_after_all_at_O2_shows_every_pass(
    spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("compile", str(spec), "-O2", "--print-after-all")[0] == 0
    names = [n for n, _ in HEADER.findall(capsys.readouterr().out)]
    assert names == [p.name for p in parse_pipeline(O2)]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_explain(spec: Path, device: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("compile", str(spec), "--explain", "--device", device)[0] == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"kernels on {device}:")
    rows = {ln.split()[0]: ln.split(None, 3) for ln in lines[2:]}
    assert len(rows) == len(list(archc.to_graph(spec).walk()))
    gru, lstm = rows["layers.1.mingru"], rows["layers.2.lstm"]
    assert gru[1] == lstm[1] == "scan"
    if device == "cuda":
        assert gru[2:] == ["diag_scan"]
        assert lstm[2] == "torch" and lstm[3].startswith("hidden size 128 > 64")
    else:
        assert gru[2] == "torch" and gru[3] == "device is cpu, the kernels need CUDA"
    assert rows["layers.4.head"][1:] == ["linear", "torch"]


@pytest.mark.parametrize(
    ("passes", "col", "words"),
    [
        ("cse,x", 5, "unknown pass 'x'"),
        ("select-scan-mode{seq_len=big}", 26, "expected an integer"),
    ],
)
def test_bad_pipeline_is_a_user_error(
    spec: Path, passes: str, col: int, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run("compile", str(spec), "--passes", passes)
    assert code == 2
    assert err.startswith(f"<passes>:1:{col}: error: ") and words in err, err
    assert "Traceback" not in err and capsys.readouterr().out == ""


def test_passes_and_O_exclude_each_other(spec: Path) -> None:
    with pytest.raises(SystemExit) as info:
        run(["compile", str(spec), "-O0", "--passes", "cse"])
    assert info.value.code == 2


def test_info_reports_the_optimized_graph(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("info", str(spec), "--json")[0] == 0
    plain = json.loads(capsys.readouterr().out)
    assert "passes" not in plain
    assert _run("info", str(spec), "--json", "--passes", "shapes,verify")[0] == 0
    opt = json.loads(capsys.readouterr().out)
    assert opt["passes"] == [
        {"pass": "shapes", "changed": False},
        {"pass": "verify", "changed": False},
    ]
    assert opt["parameters"] == plain["parameters"]


def test_summary_names_the_passes(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("compile", str(spec))[0] == 0
    out = capsys.readouterr().out
    assert f"passes      {len(parse_pipeline(O2))} run" in out
    assert _run("compile", str(spec), "-O0")[0] == 0
    assert "passes " not in capsys.readouterr().out


def test_compile_and_train_run_at_O2(spec: Path, tmp_path: Path) -> None:
    model = archc.compile(spec, seq_len=32)
    kernels = [n.attrs.get("kernel") for n in model.graph.walk() if n.op == "scan"]
    assert kernels and all(k and k.startswith("torch: ") for k in kernels)
    assert model.spec_hash == archc.compile(spec, opt_level=0).spec_hash
    x = torch.randint(0, 16, (2, 32))
    with torch.no_grad():
        assert model(x).shape == (2, 32, 16)
    summary = archc.train(archc.load(spec), tmp_path / "run", show_progress=False)
    assert summary.steps == 2 and summary.loss == summary.loss  # finite, not NaN
    from archc.runtime.session import open_run

    session = open_run(tmp_path / "run", "cpu")
    assert any(n.attrs.get("kernel") for n in session.model.graph.walk() if n.op == "scan")
