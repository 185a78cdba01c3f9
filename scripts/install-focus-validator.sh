#!/usr/bin/env bash
# The FinOps Foundation's FOCUS validator, for the test that runs it on every `--format focus`
# report shape (tests/e2e/cost/test_focus_validator.py). `make setup` calls this.
#
#   scripts/install-focus-validator.sh [VENV]     default VENV: .venv-focus
#
# Its own virtualenv, apart from .venv: focus-validator 2.2.1 needs Python 3.12 (Debian 12 has
# 3.11) and pyarrow < 18, and it pins pandas/duckdb/polars that the project does not use. It is
# a test tool only: nothing in otel_agent imports it. Idempotent: a venv that already has the
# pinned version is left as it is.
set -euo pipefail

venv=${1:-.venv-focus}
want_validator="focus-validator==2.2.1"
want_pyarrow="pyarrow<18"

find_python312() {
  local c
  for c in "${FOCUS_PYTHON:-}" "$(command -v python3.12 || true)" \
           "$(ls -d "${PYENV_ROOT:-/root/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1)"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
ok = sys.version_info[:2] == (3, 12) and version("focus-validator") == "2.2.1" \
    and int(version("pyarrow").split(".")[0]) < 18
sys.exit(0 if ok else 1)
PY
then
  exit 0
fi

py=$(find_python312) || {
  echo "install-focus-validator: needs Python 3.12 (python3.12 on PATH, pyenv's" \
       "\$PYENV_ROOT/versions/3.12*, or FOCUS_PYTHON=/path/to/python3.12)" >&2
  exit 1
}
echo "install-focus-validator: $want_validator in $venv (Python: $py)"
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$want_validator" "$want_pyarrow"
# Fails here, not in the test, if the install is unusable.
"$venv/bin/python" -c 'import focus_validator.main' >/dev/null
