#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 (mitmproxy 12 needs it); exits 1 if there is none.
# $PYTHON wins if set. The default python3 on our machines is 3.11, and pyenv's
# python3.12 shim fails unless 3.12 is selected, so each candidate is tried for real.
set -u
ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
for v in 3.13 3.12; do
  candidates+=("python$v" "/usr/local/bin/python$v" "/usr/bin/python$v")
done
candidates+=(python3)
for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]* "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.[2-9][0-9]*; do
  [ -x "$d/bin/python" ] && candidates+=("$d/bin/python")
done
for c in "${candidates[@]}"; do
  p=$(command -v "$c" 2>/dev/null) || continue
  if ok "$p"; then echo "$p"; exit 0; fi
done
echo "No Python >= 3.12 found. Install one (e.g. pyenv install 3.12) or set PYTHON=/path/to/python3.12." >&2
exit 1
