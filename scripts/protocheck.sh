#!/usr/bin/env bash
# Fails when the committed generated Go differs from what proto/ generates now.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  if [ "${CI:-}" = "true" ]; then echo "protocheck: protoc missing in CI (run scripts/tools.sh)" >&2; exit 1; fi
  echo "protocheck: SKIP, protoc not installed (scripts/tools.sh protoc protoc-gen installs it)" >&2; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
scripts/protogen.sh "$tmp"
stale=0
while IFS= read -r f; do
  rel=${f#"$tmp"/}
  if ! cmp -s "$f" "proto/$rel"; then echo "protocheck: proto/$rel is stale; run 'make proto'" >&2; stale=1; fi
done < <(find "$tmp" -name '*.go' -o -name '*.binpb')
while IFS= read -r f; do
  [ -f "$tmp/${f#proto/}" ] || { echo "protocheck: $f has no .proto source; delete it" >&2; stale=1; }
done < <(find proto -name '*.pb.go')
[ $stale -eq 0 ] && echo "protocheck: generated code is up to date"
exit $stale
