#!/usr/bin/env bash
# scripts/test.sh — every test of hadirector, on a fresh Debian 12 machine.
#
#   sudo scripts/test.sh            # everything (what CI runs)
#   sudo scripts/test.sh unit       # one stage: deps, lint, unit, scenarios, vm, lab, fuzz
#
# Stages:
#   deps       apt-get what the host tests need (only what is missing)
#   lint       gofmt, go vet
#   unit       go test -race on the packages that need no privileges or VM
#   scenarios  network-namespace scenarios on the host (root)
#   vm         tests that need IPVS, inside a qemu VM booting Debian's stock
#              kernel (the host kernel has no IPVS). If the VM cannot boot,
#              this stage fails: it never skips.
#   lab        the README's first command, `go run ./cmd/hadirector lab`, once:
#              it must exit 0 and its summary must show that both directors
#              served and every long-lived connection survived the failover
#   fuzz       a short run of every fuzz target (FUZZTIME, default 10s each)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
export GOFLAGS=${GOFLAGS:--mod=readonly}
FUZZTIME=${FUZZTIME:-10s}

# Packages whose tests run inside the VM (real IPVS). integration/lvs also
# needs the daemon, built statically here and passed in as /payload/hadirector.
VM_PACKAGES=(./internal/ipvs/ ./internal/connsync/ ./integration/lvs/)

log() { printf '\n=== %s\n' "$*"; }

stage_deps() {
	log "deps"
	# The VM's packages are the image builder's to install (vm stage); these
	# are what the host tests run. iproute2: `ip netns` for debugging labs;
	# socat: PTY pairs for the serial heartbeat link tests; keepalived: the
	# VRRP interop peer; tcpdump: packet evidence in interop failures.
	scripts/apt-need.sh iproute2 socat keepalived tcpdump
	go version
}

stage_lint() {
	log "lint: gofmt, go vet"
	local bad
	bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
	if [[ -n $bad ]]; then
		echo "gofmt would change: $bad" >&2
		return 1
	fi
	go vet ./...
}

stage_unit() {
	log "unit tests (-race)"
	go test -race -count=1 ./cmd/... ./internal/... ./integration/lab/
}

stage_scenarios() {
	log "network-namespace scenarios"
	if [[ $(id -u) != 0 ]]; then
		echo "scenarios need root (network namespaces); run this script with sudo" >&2
		return 1
	fi
	go test -count=1 -timeout 10m ./integration/...
}

stage_vm() {
	log "IPVS tests in the VM"
	integration/vm/build-image.sh
	# The guest cannot build: the daemon under test (integration/lvs) goes
	# in as a payload. go-exec.sh copies it into every package's VM.
	local payload rc=0
	payload=$(mktemp -d)
	CGO_ENABLED=0 go build -o "$payload/hadirector" ./cmd/hadirector || rc=$?
	# Inside the VM HADIRECTOR_VMTEST=1 is set, and a kernel test that finds
	# no IPVS there (or integration/lvs without the daemon) fails instead of
	# skipping; a VM that does not boot fails the package (go-exec.sh exits
	# 124/125).
	((rc)) || HADIRECTOR_VM_PAYLOAD="$payload/hadirector" CGO_ENABLED=0 \
		go test -count=1 -timeout 15m -exec "$PWD/integration/vm/go-exec.sh" -v "${VM_PACKAGES[@]}" || rc=$?
	rm -rf "$payload"
	return "$rc"
}

stage_lab() {
	log "lab: go run ./cmd/hadirector lab (the README's first command)"
	local out rc=0
	out=$(mktemp)
	# The lab itself exits 1 when the failover did not work; the grep makes
	# sure the summary says so in words too, as the README shows it.
	go run ./cmd/hadirector lab 2>&1 | tee "$out" || rc=$?
	if ((rc == 0)); then
		grep -Eq '^  lb1 served: +[1-9]' "$out" && grep -Eq '^  lb2 served: +[1-9]' "$out" &&
			grep -Eq '^  kept connections: ([0-9]+) of \1 survived' "$out" &&
			grep -q '^  RESULT: OK' "$out" || {
			echo "lab: the summary does not show both directors serving and every connection surviving" >&2
			rc=1
		}
	fi
	rm -f "$out"
	return "$rc"
}

stage_fuzz() {
	log "fuzz ($FUZZTIME per target)"
	local pkg target
	local out
	out=$(mktemp)
	while read -r pkg target; do
		# Go's fuzzing engine sometimes ends a clean run with "context
		# deadline exceeded" when a worker is slow to stop on a loaded
		# machine; that (and only that, with no failing input written) is
		# run again once. A crasher always fails.
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$out"; then
			if grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
				echo "fuzz: $target ended with the engine's 'context deadline exceeded' and no failing input: once more" >&2
				go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" || { rm -f "$out"; return 1; }
			else
				rm -f "$out"
				return 1
			fi
		fi
	done < <(grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
		for t in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2); do
			echo "./$(dirname "${f#./}")/ $t"
		done
	done | sort -u)
	rm -f "$out"
}

stages=("$@")
((${#stages[@]})) || stages=(deps lint unit scenarios vm lab fuzz)
start=$SECONDS
for s in "${stages[@]}"; do
	"stage_$s"
done
log "all passed in $((SECONDS - start))s: ${stages[*]}"
