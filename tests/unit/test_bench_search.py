"""archc.bench.search: the synthetic objective's optimum, regret curves, the table and plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from archc.bench.search import (
    main,
    regret_curve,
    regret_curves,
    synthetic_objective,
    synthetic_space,
)
from archc.search.hhnas import make_sampler

# Written out by hand: template t3 (offset 0), its centre (22, 9, 25), d_model 2**6.
OPTIMUM = {"tmpl": "t3", "tmpl=t3/vars.x0": 22, "tmpl=t3/vars.x1": 9, "tmpl=t3/vars.x2": 25}
OPTIMUM["d_model"] = 64


def test_synthetic_objective_is_zero_only_at_the_optimum() -> None:
    assert synthetic_objective(OPTIMUM) == 0.0
    for key, other in [("d_model", 32), ("d_model", 128), ("tmpl=t3/vars.x0", 21)]:
        assert synthetic_objective({**OPTIMUM, key: other}) > 0.0
    assert synthetic_objective({**OPTIMUM, "tmpl=t3/vars.x2": 26}) == pytest.approx(1 / 31**2)
    # Another template's own centre still pays that template's offset (t2: 0.2).
    t2 = {"tmpl": "t2", "tmpl=t2/vars.x0": 14, "tmpl=t2/vars.x1": 30, "tmpl=t2/vars.x2": 8}
    assert synthetic_objective({**t2, "d_model": 64}) == pytest.approx(0.2)


def test_regret_curves_shape_monotone_and_nonnegative() -> None:
    curves = regret_curves(["random", "hhnas"], seeds=2, budget=12)
    assert set(curves) == {"random", "hhnas"}
    for x in curves.values():
        assert x.shape == (2, 12)
        assert np.all(np.diff(x, axis=1) <= 0)  # best-so-far never gets worse
        assert np.all(x >= 0)
        assert np.all(x > 0)  # 12 draws of 655360 points miss the exact optimum here
    # Seeds differ: the two random-search runs are not the same curve.
    assert not np.array_equal(curves["random"][0], curves["random"][1])


def test_regret_is_zero_from_the_trial_that_hits_the_optimum() -> None:
    space = synthetic_space()
    assert set(OPTIMUM) <= set(space.distributions())
    x = regret_curve(make_sampler("random", 0), 6, space, first=OPTIMUM)
    assert x.shape == (6,) and np.all(x == 0.0)


def test_main_prints_the_table_and_writes_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "r.png"
    main(["--quick", "--no-train", "--seeds", "2", "--budget", "12", "--plot", str(png)])
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("hhnas", "tpe", "random"):
        assert name in out
    assert "--budget 12" in out  # the exact command is echoed
    rows = [line.split()[0] for line in out.splitlines() if line[:2].strip().isdigit()]
    assert rows == ["10", "12"]  # the checkpoints that fit in 12 trials, then the budget
    assert "trials/hour" not in out  # --no-train
