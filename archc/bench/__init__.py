"""The `archc bench` suites: side-by-side benchmarks reported as ratios, never asserted.

SUITES maps each suite name to its module (each has `main(argv)` taking `--quick`);
`archc bench all` (archc/bench/all.py) runs them all into one report.
"""

SUITES = {
    "foundation": "archc.bench.foundation",  # compile times, compiled vs hand-written fwd+bwd
    "training": "archc.bench.training",  # archc train vs hand-written training loops
    "scan": "archc.bench.scan",  # scan modes and kernels vs sequential loops
    "memory": "archc.bench.memory",  # Titans memory: chunked vs per-token write + read
    "segment": "archc.bench.segment",  # bytes per token: segment recurrence vs full attention
    "passes": "archc.bench.passes",  # -O0 vs -O2: node counts, fwd+bwd time, pipeline time
    "search": "archc.bench.search",  # sampler regret curves (hhnas/tpe/random), MQAR trials/hour
}
