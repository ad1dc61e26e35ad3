"""Golden files of the printed IR of every spec in specs/.

Each spec file `specs/<name>` has its canonical printed IR (`archc.ir.printer.print_graph`)
stored in `tests/golden/ir/<name>.ir` (e.g. `gpt.yaml.ir`, `gpt.arch.ir`). A change to
the IR builder, the op table or the printer that alters any of them fails here, so it
has to be reviewed. After checking that the change is intended, regenerate with

    ARCHC_UPDATE_GOLDEN=1 python -m pytest -q tests/golden

and commit the rewritten .ir files together with the change. (ARCHC_UPDATE_GOLDEN is
test tooling read by this file only, not an archc knob.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import archc
from archc.ir.printer import print_graph, structural_hash

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"
GOLDEN = Path(__file__).resolve().parent / "ir"
SPEC_FILES = sorted([*SPECS.glob("*.yaml"), *SPECS.glob("*.arch")])
UPDATE = os.environ.get("ARCHC_UPDATE_GOLDEN", "").strip().lower() in {"1", "true", "yes", "on"}


def test_spec_library_is_not_empty() -> None:
    names = {p.name for p in SPEC_FILES}
    assert {"gpt.yaml", "gpt.arch", "llama.yaml", "lstm.yaml", "looped.yaml"} <= names


@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.name)
def test_printed_ir_matches_golden(spec: Path) -> None:
    text = print_graph(archc.to_graph(spec))
    golden = GOLDEN / f"{spec.name}.ir"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text)
        return
    assert golden.exists(), (
        f"no golden file {golden.relative_to(REPO)}; create it with "
        "ARCHC_UPDATE_GOLDEN=1 python -m pytest -q tests/golden"
    )
    expected = golden.read_text()
    assert text == expected, (
        f"printed IR of {spec.name} differs from {golden.name}; if the change is intended, "
        "regenerate with ARCHC_UPDATE_GOLDEN=1 python -m pytest -q tests/golden"
    )


def test_no_stale_golden_files() -> None:
    """Every golden file belongs to a spec that still exists."""
    if UPDATE:
        pytest.skip("regenerating golden files")
    expected = {f"{p.name}.ir" for p in SPEC_FILES}
    stale = sorted(p.name for p in GOLDEN.glob("*.ir") if p.name not in expected)
    assert not stale, f"golden files without a spec: {stale}"


def test_printing_is_deterministic_across_builds() -> None:
    for spec in SPEC_FILES:
        first, second = archc.to_graph(spec), archc.to_graph(spec)
        assert print_graph(first) == print_graph(second), spec.name
        assert structural_hash(first) == structural_hash(second), spec.name


def test_structural_hash_yaml_and_dsl_twins_agree() -> None:
    for name in ("gpt", "lstm", "looped"):
        h_yaml = structural_hash(archc.to_graph(SPECS / f"{name}.yaml"))
        h_dsl = structural_hash(archc.to_graph(SPECS / f"{name}.arch"))
        assert h_yaml == h_dsl, name


def test_structural_hash_tells_architectures_apart() -> None:
    hashes = {p.name: structural_hash(archc.to_graph(p)) for p in SPEC_FILES if p.suffix == ".yaml"}
    assert hashes["gpt.yaml"] != hashes["llama.yaml"]
    assert len(set(hashes.values())) == len(hashes), hashes


def test_structural_hash_ignores_names_but_not_attributes() -> None:
    gpt = archc.load(SPECS / "gpt.yaml")
    renamed = archc.to_graph(SPECS / "gpt.yaml", ["model=gpt-renamed"])
    assert structural_hash(renamed) == structural_hash(archc.to_graph(gpt))
    wider = archc.to_graph(SPECS / "gpt.yaml", ["d_model=64"])
    assert structural_hash(wider) != structural_hash(archc.to_graph(gpt))


def test_structural_hash_ignores_the_path_of_a_tied_embedding() -> None:
    flat = "model: t\nvocab: 10\nd_model: 8\nlayers: [embed, {norm: rms}, {head: {tied: true}}]\n"
    nested = (
        "model: t\nvocab: 10\nd_model: 8\ndefine: {stem: [embed, {norm: rms}]}\n"
        "layers: [stem, {head: {tied: true}}]\n"
    )
    assert structural_hash(archc.to_graph(flat)) == structural_hash(archc.to_graph(nested))


_HASHES = """
import sys
from pathlib import Path
import archc
from archc.ir.printer import structural_hash
for p in sys.argv[1:]:
    print(Path(p).name, structural_hash(archc.to_graph(p)))
"""


def test_structural_hash_is_stable_across_processes() -> None:
    """Independent of PYTHONHASHSEED (set/dict ordering) and of the process."""
    here = "\n".join(f"{p.name} {structural_hash(archc.to_graph(p))}" for p in SPEC_FILES)
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run(
            [sys.executable, "-c", _HASHES, *map(str, SPEC_FILES)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == here
