#!/usr/bin/env bash
# The few-shot protocol (see dept/store/protocols.py): every option: python -m dept few-shot --help
#   bash scripts/few_shot.sh                                        # no $DATA: the embedded demo
#   DATA=/path/to/data bash scripts/few_shot.sh --trainers CoOp CoOpDePT --seeds 1 2 3
# Runs go where the official scripts put them; tables to <output>/few_shot/results/.
set -euo pipefail
exec "${PYTHON:-python3}" -m dept few-shot "$@"
