#!/usr/bin/env bash
# Install dept and its dependencies into the current Python environment (a venv or conda env).
# Dassl.pytorch is not on PyPI: it is installed from GitHub at a pinned commit, with the two snags
# of its setup.py on a current Python handled (it imports numpy at build time, so no build
# isolation; its pins such as wilds==1.2.2 and flake8==3.7.9 no longer install, so no deps:
# what it imports comes with dept's own requirements).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DASSL_COMMIT=c61a1b570ac6333bd50fb5ae06aea59002fb20bb
DASSL_SRC=${DASSL_SRC:-"git+https://github.com/KaiyangZhou/Dassl.pytorch@${DASSL_COMMIT}"}

"$PY" -m pip install -e ".[test]"
if "$PY" -c "import dassl" 2>/dev/null; then
    echo "dassl already installed: $("$PY" -c 'import dassl, os; print(os.path.dirname(dassl.__file__))')"
else
    "$PY" -m pip install --no-build-isolation --no-deps "$DASSL_SRC"
fi
"$PY" -c "import dept, dassl; print('dept', dept.__version__, 'with dassl', dassl.__version__, 'is ready')"
