"""Performance scripts (``python -m stbench.perf.bench_features``); not imported by the harness."""
