"""egress benchmarks: `python -m bench` (see bench/README.md). Not part of the egress package."""
