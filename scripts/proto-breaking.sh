#!/usr/bin/env bash
# buf breaking: proto/ must stay compatible (buf.yaml's FILE rules) with
#   PROTO_BASELINE if set (any git ref), else the last tag, else the previous
#   commit (HEAD~1) — and uncommitted changes to proto/ are checked against
#   HEAD as well.
# A deliberate break is made by tagging the release that ships it, or once
# with PROTO_BASELINE=<ref> naming a commit after the break.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-.venv/bin/buf}

check() {
  echo "buf breaking: proto/ against $1" >&2
  "$BUF" breaking --against ".git#ref=$1"
}

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "buf breaking: not a git checkout, nothing to compare with" >&2
  exit 0
fi
if [ -n "$(git status --porcelain -- proto buf.yaml)" ]; then
  check HEAD
fi
if [ -n "${PROTO_BASELINE:-}" ]; then
  check "$PROTO_BASELINE"
elif tag=$(git describe --tags --abbrev=0 2>/dev/null); then
  check "$tag"
elif git rev-parse --verify -q HEAD~1 >/dev/null; then
  check HEAD~1
else
  # A shallow clone (depth 1) or the first commit: no history to compare.
  echo "buf breaking: no tag and no previous commit in this clone; nothing to compare with" >&2
fi
