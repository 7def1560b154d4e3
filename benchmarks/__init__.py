"""Speed and memory harness (not tests): ``python -m benchmarks.run`` or ``make bench``."""
