#!/usr/bin/env bash
# Base-to-new protocol: train on base classes, evaluate on new ones, write the results table.
#   bash scripts/base2new.sh                                  # no $DATA: the embedded demo
#   DATA=/path/to/data bash scripts/base2new.sh --datasets dtd eurosat --seeds 1 2 3 --trainers CoOp CoOpDePT
# Relative paths (--output, --root, $DATA) are relative to the folder you run this from; the
# trainer and dataset configs are the installed package's checkout (configs/, or --configs-dir).
# Every option: python -m dept base2new --help
set -euo pipefail
exec "${PYTHON:-python3}" -m dept base2new "$@"
