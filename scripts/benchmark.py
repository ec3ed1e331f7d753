#!/usr/bin/env python3
"""Training-step and test-throughput benchmark of the text-encoding paths: see ``dept.benchmark``.

    python scripts/benchmark.py --classes 50 500 1000 [--official-dir PATH] [--out results.json]
    python scripts/benchmark.py --quick
"""
import sys

from dept.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
