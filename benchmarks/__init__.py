"""On-demand benchmarks: `python -m benchmarks` (or `make bench`). Not tests; nothing here is timed in CI."""
