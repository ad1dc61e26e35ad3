"""Architecture search over a spec's `search:` space (kept import-light: `archc check`
parses spaces through archc.search.space, which needs neither torch nor optuna).

- space.py: the `search:` syntax, parameter naming, resolution of choices.
- constraints.py: candidates (concrete spec, feasibility, budget, de-dup key), freeze.
- hhnas.py: the HHNAS Optuna sampler and `make_sampler(name, seed)`.
- study.py: `run_study(spec, objective, sampler, n_trials, ...)`, `freeze_trial`.
"""
