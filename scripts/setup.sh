#!/usr/bin/env bash
# Install dept and its dependencies into the current Python environment (a venv or conda env).
#
# Dassl.pytorch is not on PyPI. It is installed, at the pinned commit, from the first of:
#   1. $DASSL_SRC: a wheel, a local checkout or any pip requirement (a cluster without GitHub);
#   2. a wheel of that commit in ${DEPT_VENDOR_DIR:-../shared/vendor} (dassl-*.whl), installed only
#      when it matches its line in SHA256SUMS there (a machine without network, CI);
#   3. GitHub.
# With the two snags of Dassl's setup.py on a current Python handled: it imports numpy at build
# time, so no build isolation; its pins such as wilds==1.2.2 and flake8==3.7.9 no longer install,
# so no deps (what it imports comes with dept's own requirements).
#
#   bash scripts/setup.sh               dept (editable, with the test extras), then Dassl
#   bash scripts/setup.sh --dassl-only  only make sure Dassl is installed (.ci/run uses this)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENDOR=${DEPT_VENDOR_DIR:-../shared/vendor}
DASSL_COMMIT=c61a1b570ac6333bd50fb5ae06aea59002fb20bb
GITHUB_SRC="git+https://github.com/KaiyangZhou/Dassl.pytorch@${DASSL_COMMIT}"

install_vendored_wheel() {  # $1: the wheel; refuses one that is not listed in, or does not match, SHA256SUMS
    local name sums
    name=$(basename "$1")
    sums="$VENDOR/SHA256SUMS"
    echo "Dassl is not installed; installing the vendored wheel $1"
    if [ ! -f "$sums" ] || ! grep -q "  $name\$" "$sums"; then
        echo "ERROR: $name is not listed in $sums: refusing to install an unverified wheel." >&2
        return 1
    fi
    if ! (cd "$VENDOR" && grep "  $name\$" SHA256SUMS | sha256sum --check --strict --quiet -); then
        echo "ERROR: $1 does not match its SHA256 in $sums: refusing to install it." >&2
        return 1
    fi
    "$PY" -m pip install -q --no-deps "$1" 2>&1 | grep -v "^WARNING: Location" || true
}

install_dassl() {
    "$PY" -c "import dassl" 2>/dev/null && return 0
    local wheel
    wheel=$(ls "$VENDOR"/dassl-*.whl 2>/dev/null | sort | tail -n 1 || true)
    if [ -n "${DASSL_SRC:-}" ]; then
        "$PY" -m pip install --no-build-isolation --no-deps "$DASSL_SRC"
    elif [ -n "$wheel" ]; then
        install_vendored_wheel "$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")" || return 1
    else
        "$PY" -m pip install --no-build-isolation --no-deps "$GITHUB_SRC" || {
            echo "ERROR: Dassl could not be installed from GitHub. Without network, install a wheel of commit" \
                 "$DASSL_COMMIT: DASSL_SRC=/path/to/dassl-0.6.3-py3-none-any.whl bash scripts/setup.sh" >&2
            return 1
        }
    fi
    if ! "$PY" -c "import dassl" 2>/dev/null; then
        echo "ERROR: Dassl was installed but does not import: $("$PY" -c 'import dassl' 2>&1 | tail -n 1)" >&2
        return 1
    fi
    echo "Dassl installed: $("$PY" -c 'import dassl, os; print(dassl.__version__, os.path.dirname(dassl.__file__))')"
}

if [ "${1:-}" = "--dassl-only" ]; then
    install_dassl
    exit $?
fi
"$PY" -m pip install -e ".[test]"
if "$PY" -c "import dassl" 2>/dev/null; then
    echo "dassl already installed: $("$PY" -c 'import dassl, os; print(os.path.dirname(dassl.__file__))')"
else
    install_dassl
fi
"$PY" -c "import dept, dassl; print('dept', dept.__version__, 'with dassl', dassl.__version__, 'is ready')"
