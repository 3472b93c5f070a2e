#!/bin/sh
# Regenerates src/rpc/ (the google.rpc error details the daemon sends in
# grpc-status-details-bin) from the vendored rpc-proto/google/rpc/error_details.proto,
# or writes them to the directory given instead (the suite compares the two).
#
# The .proto is copied verbatim (Apache-2.0, header kept) from
# googleapis-common-protos 1.76.0, the version the daemon pins; it lives apart
# from proto/ so that the other clients' generated code does not change.
# Pinned tools: the protoc bundled in grpcio-tools (the project's virtualenv,
# INTERLOCK_PYTHON overrides it) and protoc-gen-es from this package's
# devDependencies, the same one `make generate` uses for src/gen.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
python=${INTERLOCK_PYTHON:-$here/../../.venv/bin/python}
out=${1:-$here/src/rpc}
rm -rf "$out"
mkdir -p "$out"
"$python" -m grpc_tools.protoc \
  --plugin=protoc-gen-es="$here/node_modules/.bin/protoc-gen-es" \
  --es_out="$out" \
  --es_opt=target=ts,import_extension=js \
  -I "$here/rpc-proto" \
  google/rpc/error_details.proto
for f in $(find "$out" -name '*.ts'); do
  sed -i '1i // Code generated from rpc-proto/ by npm run generate-rpc. DO NOT EDIT.' "$f"
done
