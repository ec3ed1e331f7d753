#!/usr/bin/env python3
"""Runs ``benchmarks/benchmark.py`` (speed and memory of every method, ours beside the official code)
with the same arguments; see its docstring.

    python scripts/benchmark.py --classes 50 500 --official-dir PATH --out results.json
    python scripts/benchmark.py --quick
"""
import os
import runpy
import sys

if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "benchmark.py")
    sys.argv[0] = path
    runpy.run_path(path, run_name="__main__")
