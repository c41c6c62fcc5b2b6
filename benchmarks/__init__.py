"""Benchmark harness for the stream processor: `python -m benchmarks.run --help`."""
