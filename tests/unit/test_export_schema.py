"""`archc export-schema`: the JSON Schema of YAML specs accepts every spec archc accepts
(the spec library, interpolated and search specs) and rejects specs archc rejects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from archc.cli import run
from archc.diagnostics import DiagnosticError
from archc.frontend.json_schema import spec_schema
from archc.frontend.resolve import load_spec
from archc.frontend.yaml import load_yaml

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.yaml"))

BASE = """\
model: m
vocab: 16
d_model: 8
layers:
  - embed
LAYER
  - head
"""


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _data(text: str) -> Any:
    return load_yaml(text, "<test>")[0]


def _loads(text: str) -> bool:
    """Whether archc's own loader accepts the spec (the fact the schema must match)."""
    try:
        load_spec("<test>.yaml", text=text)
    except DiagnosticError:
        return False
    return True


def test_schema_is_draft_2020_12() -> None:
    schema = spec_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_spec_library_is_present() -> None:
    assert len(SPECS) >= 20 and any("search" in p.name for p in SPECS)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_yaml_spec_validates(validator: Any, path: Path) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message[:200]}"
        for e in validator.iter_errors(_data(path.read_text()))
    ]
    assert not errors, errors[:3]


VALID = {
    "interpolation": BASE.replace("d_model: 8", "d_model: ${w * 2}\nvars: {w: 4}").replace(
        "LAYER", "  - {attention: {heads: '${vars.w // 2}'}}"
    ),
    "shorthand": BASE.replace("LAYER", "  - norm: layer\n  - attention: 2"),
    "body-list": BASE.replace("LAYER", "  - residual: [{norm: rms}, mlp]"),
    "hier-shorthand": BASE.replace("LAYER", "  - hier: {down: 2, body: [mlp]}"),
    "define": BASE.replace("d_model: 8", "d_model: 8\ndefine: {blk: [mlp]}").replace(
        "LAYER", "  - blk\n  - repeat: {n: 2, body: [blk]}"
    ),
    "task-mapping": BASE.replace("LAYER", "  - mlp") + "train: {task: {name: parity, n: 2}}\n",
    "search": BASE.replace("LAYER", "  - {mlp: {mult: 2}}")
    + "search:\n  layers[1].mlp.mult: {int: [1, 4], step: 1}\n"
    "  d_model: {choice: [8, 16]}\n  constraints: {max_params: 1000000}\n",
}

INVALID = {
    "unknown-component": BASE.replace("LAYER", "  - {attentoin: {heads: 2}}"),
    "wrong-type": BASE.replace("LAYER", "  - {attention: {heads: four}}"),
    "enum-out-of-range": BASE.replace("LAYER", "  - {norm: {kind: batch}}"),
    "enum-shorthand": BASE.replace("LAYER", "  - norm: batch"),
    "unknown-param": BASE.replace("LAYER", "  - {mlp: {width: 3}}"),
    "unknown-train-key": BASE.replace("LAYER", "  - mlp") + "train: {learning_rate: 0.1}\n",
    "unknown-task": BASE.replace("LAYER", "  - mlp") + "train: {task: sorting}\n",
    "unknown-top-key": BASE.replace("LAYER", "  - mlp") + "optimizer: adamw\n",
    "missing-d_model": BASE.replace("d_model: 8\n", "").replace("LAYER", "  - mlp"),
    "body-missing": BASE.replace("LAYER", "  - residual"),
    "bad-domain": BASE.replace("LAYER", "  - mlp") + "search:\n  d_model: {choice: 8}\n",
    "unknown-constraint": BASE.replace("LAYER", "  - mlp")
    + "search:\n  d_model: {choice: [8]}\n  constraints: {max_time: 3}\n",
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_specs_pass(validator: Any, name: str) -> None:
    text = VALID[name]
    assert _loads(text), "archc rejects the example itself"
    errors = [e.message for e in validator.iter_errors(_data(text))]
    assert not errors, errors[:3]


@pytest.mark.parametrize("name", sorted(INVALID))
def test_wrong_specs_are_rejected(validator: Any, name: str) -> None:
    text = INVALID[name]
    assert not _loads(text), "archc accepts the example, so it is not wrong"
    assert not validator.is_valid(_data(text))


def test_new_component_appears_without_edits() -> None:
    from archc.frontend import components as comp

    name = "probe_component_for_schema"

    class ProbeParams(comp.Params):
        width: int = 3

    comp.register_component(comp.ComponentDef(name, ProbeParams, "width", doc="probe"))
    try:
        schema = spec_schema()
    finally:
        comp._REGISTRY.pop(name)
    entry = schema["$defs"][f"component.{name}"]
    assert entry["description"].startswith("probe")
    mapping = entry["anyOf"][0]
    assert mapping["properties"]["width"]["default"] == 3


def test_cli_writes_file_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "spec.schema.json"
    assert run(["export-schema", "-o", str(out)]) == 0
    written = json.loads(out.read_text())
    assert run(["export-schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert written == printed
    assert "attention" in written["$defs"]["layer"]["anyOf"][-1]["properties"]


def test_export_schema_never_imports_torch(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    code = (
        "import sys; from archc.cli import run; "
        f"rc = run(['export-schema', '-o', {str(out)!r}]); "
        "assert rc == 0, rc; "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
        "assert not bad, bad[:5]"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARCHC_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())["title"] == "archc spec"
