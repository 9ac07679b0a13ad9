#!/usr/bin/env bash
# vmtest.sh - run integration/lvs in the test VM: build the daemon statically
# on the host, pass it in as /payload/hadirector, run the package's tests.
#
#   integration/lvs/vmtest.sh                      # all of them
#   integration/lvs/vmtest.sh -run TestDaemonSmoke # extra args go to go test
#
# As root on the dev/CI host (the VM image is built on first use). Same as
#   CGO_ENABLED=0 go build -o DIR/hadirector ./cmd/hadirector
#   HADIRECTOR_VM_PAYLOAD=DIR/hadirector CGO_ENABLED=0 \
#     go test -count=1 -exec "$PWD/integration/vm/go-exec.sh" -v ./integration/lvs/
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=$PATH:/usr/local/go/bin
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
CGO_ENABLED=0 go build -o "$dir/hadirector" ./cmd/hadirector
HADIRECTOR_VM_PAYLOAD="$dir/hadirector" CGO_ENABLED=0 \
	go test -count=1 -timeout 5m -exec "$PWD/integration/vm/go-exec.sh" -v "$@" ./integration/lvs/
