"""Benchmark of a shard process and of a whole worker: ``./run.sh bench [options]``.

See :mod:`scripts.bench.__main__` for what is measured; it prints figures and asserts
nothing (the machine is shared and noisy).
"""
