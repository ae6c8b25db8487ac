#!/usr/bin/env bash
# Regenerates the committed Go code from proto/ with pinned protoc plugins, and the
# descriptor set with source info (comments) that the gateway serves over reflection.
# Usage: scripts/protogen.sh [OUTDIR]   (default: proto/, in place)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${TFGATE_CACHE:-$HOME/.cache/tfgate}/bin"
out="${1:-proto}"
mkdir -p "$out"
mapfile -t files < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
protoc -I proto -I /usr/include \
  --plugin=protoc-gen-go="$BIN/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  "${files[@]}"
# protoc-gen-go strips comments from the descriptors it embeds; reflection clients
# (grpcurl describe, UIs) show the API's docs from this set instead.
protoc -I proto -I /usr/include --include_source_info --include_imports \
  --descriptor_set_out="$out/tfgate/v1/tfgate.binpb" \
  $(printf '%s\n' "${files[@]}" | grep '^tfgate/')
