"""A real (non-editable) install of archc works from anywhere.

Creates a venv (with the machine's site-packages, so torch and friends are reused),
pip-installs a copy of the repo into it without build isolation, and drives the
installed `archc` from an unrelated directory: the package, its `backends` and the
DSL grammar (package data) must all come from the venv, not from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SPEC_YAML = """\
model: tiny
vocab: 64
d_model: 16
layers:
  - embed
  - residual: [{norm: rms}, {attention: {heads: 2}}]
  - residual: [{norm: rms}, {mlp: 2}]
  - norm: rms
  - head: {tied: true}
"""

SPEC_DSL = """\
model tiny-dsl(vocab=64, d_model=16) {
  embed
  repeat(2) {
    residual { norm(rms); attention(heads=2, pos=rope) }
    residual { norm(rms); mlp(mult=2, act=swiglu) }
  }
  norm(rms)
  head(tied=true)
}
"""

# Build byproducts and caches that must not travel with the source copy.
_IGNORE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".venv",
    "runs",
    "tests",
)


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ARCHC_DEBUG")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _sh(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert res.returncode == 0, (
        f"{args}\nstdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}"
    )
    return res


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import ensurepip  # noqa: F401
        import venv as _venv  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"venv/ensurepip is not available in this Python: {exc}")
    root = tmp_path_factory.mktemp("install")
    env_dir = root / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if made.returncode != 0 or not (env_dir / "bin" / "pip").exists():
        pytest.skip(f"cannot create a venv with pip: {made.stderr.strip()[-500:]}")
    # Python's ensurepip seeds the venv with its own (old) setuptools, which shadows the
    # machine's and may lack bdist_wheel when `wheel` is absent: build with the machine's.
    pip = env_dir / "bin" / "pip"
    _sh([pip, "uninstall", "--yes", "--quiet", "setuptools"], cwd=root)
    # Install from a copy so the build's byproducts (build/, *.egg-info) never land in
    # the checkout other people are working in.
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_IGNORE)
    _sh(
        [pip, "install", "--no-deps", "--no-build-isolation", "--quiet", src],
        cwd=root,
        timeout=600,
    )
    shutil.rmtree(src)  # the installed package must not depend on the source tree
    return env_dir


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(SPEC_YAML)
    (tmp_path / "tiny.arch").write_text(SPEC_DSL)
    return tmp_path


@pytest.mark.slow
def test_installed_package_is_used(venv: Path, workdir: Path) -> None:
    code = (
        "import archc, archc.backends.torch.lower, importlib.resources as r; "
        "print(archc.__file__); "
        "print(archc.backends.torch.lower.__file__); "
        "print(r.files('archc.grammar').joinpath('archc.lark').is_file())"
    )
    res = _sh([venv / "bin" / "python", "-c", code], cwd=workdir)
    archc_file, lower_file, grammar = res.stdout.split()
    for f in (archc_file, lower_file):
        path = Path(f).resolve()
        assert path.is_relative_to(venv.resolve()), f"{f} is not inside the venv {venv}"
        assert not path.is_relative_to(REPO), f"{f} comes from the checkout"
    assert grammar == "True", "grammar/archc.lark is not shipped as package data"


@pytest.mark.slow
def test_installed_cli_compiles_yaml(venv: Path, workdir: Path) -> None:
    res = _sh([venv / "bin" / "archc", "compile", "tiny.yaml"], cwd=workdir)
    assert res.stdout.startswith("model tiny")
    assert "parameters" in res.stdout
    res = _sh([venv / "bin" / "archc", "check", "tiny.yaml"], cwd=workdir)
    assert "tiny.yaml: ok" in res.stdout


@pytest.mark.slow
def test_installed_cli_compiles_dsl(venv: Path, workdir: Path) -> None:
    """The DSL needs the grammar file: proof that it ships inside the package."""
    res = _sh([venv / "bin" / "archc", "compile", "tiny.arch"], cwd=workdir)
    assert res.stdout.startswith("model tiny-dsl")
    res = _sh([venv / "bin" / "archc", "compile", "tiny.arch", "--emit", "ir"], cwd=workdir)
    assert res.stdout.startswith("graph tiny-dsl {")
    res = _sh([venv / "bin" / "archc", "fmt", "tiny.yaml", "--to", "dsl"], cwd=workdir)
    assert res.stdout.startswith("model tiny(")


@pytest.mark.slow
def test_installed_cli_reports_errors(venv: Path, workdir: Path) -> None:
    (workdir / "bad.arch").write_text("model bad(vocab=64, d_model=16) {\n  embed\n  nrom\n}\n")
    res = subprocess.run(
        [str(venv / "bin" / "archc"), "check", "bad.arch"],
        cwd=workdir,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("bad.arch:3:3: error: unknown component or block 'nrom'")
    assert "Traceback" not in res.stderr
