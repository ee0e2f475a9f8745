#!/usr/bin/env bash
# Installs the coding-agent CLIs pinned in tests/agents/package-lock.json (npm ci) into
# ${XDG_CACHE_HOME:-~/.cache}/llmgate/agents/<sha256 of the lock>, once, and prints that folder.
# Its node_modules/.bin holds claude, codex, gemini, qwen and opencode.
set -euo pipefail
src="$(cd "$(dirname "$0")/../tests/agents" && pwd)"
command -v npm >/dev/null || { echo "agents.sh: npm not found (install Node.js 20+)" >&2; exit 1; }
hash="$(sha256sum "$src/package-lock.json" | cut -c1-16)"
dest="${XDG_CACHE_HOME:-$HOME/.cache}/llmgate/agents/$hash"
if [ ! -f "$dest/.installed" ]; then
  mkdir -p "$(dirname "$dest")"
  work="$(mktemp -d "$dest.XXXXXX")"  # built beside, renamed when complete: never half-installed
  trap 'rm -rf "$work"' EXIT
  cp "$src/package.json" "$src/package-lock.json" "$work/"
  # Install scripts stay off: every CLI runs without them (the native binaries come as
  # platform packages), and npm's download cache (~/.npm) is reused across lock changes.
  # npm ci refuses a lock missing entries for optional platform packages its registry lacks
  # (partial mirrors); npm install --no-save then installs the same locked versions.
  flags=(--ignore-scripts --no-audit --no-fund --loglevel=error)
  (cd "$work" && { npm ci "${flags[@]}" 2>/dev/null || npm install --no-save "${flags[@]}"; } >&2)
  # the install scripts needed: Claude Code's and opencode's put their native binaries in place
  (cd "$work" && node node_modules/@anthropic-ai/claude-code/install.cjs >&2 \
     && cd node_modules/opencode-ai && node postinstall.mjs >&2)
  touch "$work/.installed"
  rm -rf "$dest" && mv "$work" "$dest"
fi
echo "$dest"
