#!/usr/bin/env bash
# Publishes self-contained linux-x64 folders of both executables (no .NET install needed on the target):
#   docs/deploy/publish.sh [OUT]     (default OUT: ./publish)
# gives OUT/coordinator/coordinator and OUT/edge-client/edge-client; copy each folder to /opt/federated/ and install
# the unit files beside this script. The TorchSharp native fix (build/TorchSharpNativeFix.targets) runs on the
# published libLibTorchSharp.so too.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(realpath -m "${1:-publish}")"
for project in Coordinator:coordinator EdgeClient:edge-client; do
    dir="${project%%:*}" name="${project##*:}"
    echo "publishing $name to $out/$name"
    dotnet publish "src/$dir" -c Release -r linux-x64 --self-contained true -p:PublishReadyToRun=false -o "$out/$name" --nologo -v quiet
    "$out/$name/$name" version
done
