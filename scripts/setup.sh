#!/usr/bin/env bash
# Creates .venv with a Python >= 3.12 and installs the project (editable) into it.
#   scripts/setup.sh run    what running the gateway needs (make run, make web)
#   scripts/setup.sh test   that plus the test extras: SDKs, pytest, playwright (make test, make bench)
# Each has its own stamp, redone when pyproject.toml changes; pip's progress is shown.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}
case "$what" in
  run) spec="." stamp=.venv/.installed-run
       about="the gateway's runtime dependencies (mitmproxy, aiohttp, pydantic, ...): about a minute" ;;
  test) spec=".[test]" stamp=.venv/.installed-test
       about="the gateway and its test extras (openai, anthropic, google-genai, pytest, playwright, ...): a few minutes" ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
  py=$(scripts/find-python.sh)
  echo "Creating .venv with $py"
  rm -rf .venv
  "$py" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "Installing $about (first time only)"
  start=$SECONDS
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt -e "$spec"
  touch "$stamp"
  if [ "$what" = test ]; then touch .venv/.installed-run; fi  # it holds everything running needs
  echo "Installed in $((SECONDS - start)) s"
fi
