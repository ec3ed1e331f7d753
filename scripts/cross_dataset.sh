#!/usr/bin/env bash
# The cross-dataset protocol (see dept/store/protocols.py): every option: python -m dept cross-dataset --help
#   bash scripts/cross_dataset.sh                                        # no $DATA: the embedded demo
#   DATA=/path/to/data bash scripts/cross_dataset.sh --trainers CoOp CoOpDePT --seeds 1 2 3
# Runs go where the official scripts put them; tables to <output>/cross_dataset/results/.
set -euo pipefail
exec "${PYTHON:-python3}" -m dept cross-dataset "$@"
