"""System benchmarks of issue 4: whole servers under one load driver, side by side.

`python -m benchmarks.system` (what `make bench` runs) starts each server in
its own process, drives the same calls at it, and prints one table: claims/s,
front-node CPU µs per claim, Redis CPU µs per claim, Redis commands per claim,
then the targets. See benchmarks/README.md.
"""
