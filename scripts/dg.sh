#!/usr/bin/env bash
# The dg protocol (see dept/store/protocols.py): every option: python -m dept dg --help
#   bash scripts/dg.sh                                        # no $DATA: the embedded demo
#   DATA=/path/to/data bash scripts/dg.sh --trainers CoOp CoOpDePT --seeds 1 2 3
# Runs go where the official scripts put them; tables to <output>/dg/results/.
set -euo pipefail
exec "${PYTHON:-python3}" -m dept dg "$@"
