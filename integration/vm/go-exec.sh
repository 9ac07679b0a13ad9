#!/usr/bin/env bash
# go-exec.sh - `go test -exec` program: runs each compiled test binary inside
# hadirector's test VM (real IPVS) instead of on the host.
#
#   CGO_ENABLED=0 go test -exec "$PWD/integration/vm/go-exec.sh" -v ./internal/ipvs/
#
# go test calls `go-exec.sh /tmp/go-build.../b001/ipvs.test -test.v=true ...`
# with cwd = the package directory. The binary and the package's testdata/
# become the guest's /payload (the test's cwd); the binary's exit code comes
# back as ours, so go test prints ok/FAIL as usual. A VM that cannot boot or
# hangs gives 125/124: go test reports FAIL, never a skip or a pass.
#
# Coverage (-cover, -coverprofile): go test passes paths inside the binary's
# build dir (-test.gocoverdir=..., -test.coverprofile=...). Then that dir is
# shared read-write into the guest over 9p at /host and the arguments are
# rewritten to /host/..., so the profiles land where go test looks for them.
#
# The test binary must be static (CGO_ENABLED=0): the guest has only the few
# shared libraries that ipvsadm, ip and bash need. This is checked.
#
# Env:
#   HADIRECTOR_VM_PAYLOAD  extra host paths to copy into /payload, separated by
#                          spaces; use absolute paths (cwd is the package dir).
#                          E.g. a statically built daemon the test execs as
#                          /payload/hadirector.
#   HADIRECTOR_VM_ENV      names of host environment variables to pass into
#                          the guest, separated by spaces (unset ones are skipped)
#   HADIRECTOR_VM_TIMEOUT  seconds for the whole VM. Default: the test binary's
#                          -test.timeout + 60 s (so the test's own timeout,
#                          with its goroutine dump, fires first), else 660.
#   HADIRECTOR_VM_MEM      guest memory in MiB (default 1024)
#   HADIRECTOR_VM_VERBOSE  1: always show the VM chatter on stderr (build,
#                          boot markers, timing); by default only on failure,
#                          so go test / go test -json output stays clean.
#   plus those of run.sh and build-image.sh (HADIRECTOR_VM_WORK, ...).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
(($# >= 1)) || { echo "usage: go-exec.sh TEST_BINARY [ARG...]" >&2; exit 2; }
bin=$1
shift
bindir=$(cd "$(dirname "$bin")" && pwd)

if ldd "$bin" >/dev/null 2>&1; then # ldd fails on a static binary
	echo "go-exec.sh: $bin is dynamically linked; build the tests with CGO_ENABLED=0" >&2
	exit 125
fi

# -test.timeout=1h2m3.5s -> seconds (Go duration syntax: h, m, s, ms, us, ns)
dur_seconds() {
	awk -v d="$1" 'BEGIN {
		t = 0
		while (match(d, /^[0-9.]+(h|ms|us|µs|ns|m|s)/)) {
			tok = substr(d, 1, RLENGTH); d = substr(d, RLENGTH + 1)
			match(tok, /[a-zµ]+$/); u = substr(tok, RSTART); n = substr(tok, 1, RSTART - 1) + 0
			t += n * (u == "h" ? 3600 : u == "m" ? 60 : u == "s" ? 1 : u == "ms" ? 1e-3 : 1e-6)
		}
		printf "%d\n", t + 0.999
	}'
}
timeout=${HADIRECTOR_VM_TIMEOUT:-}
targs=() share=0
for a in "$@"; do
	if [[ -z ${HADIRECTOR_VM_TIMEOUT:-} && $a == -test.timeout=* ]]; then
		s=$(dur_seconds "${a#-test.timeout=}")
		((s > 0)) && timeout=$((s + 60))
	fi
	if [[ $a == *"$bindir"* ]]; then
		share=1
		a=${a//"$bindir"//host}
	fi
	targs+=("$a")
done

args=(--timeout "${timeout:-660}" --mem "${HADIRECTOR_VM_MEM:-1024}")
[[ -d testdata ]] && args+=(--payload testdata)
for p in ${HADIRECTOR_VM_PAYLOAD:-}; do args+=(--payload "$p"); done
for n in ${HADIRECTOR_VM_ENV:-}; do
	[[ -n ${!n+x} ]] && args+=(--env "$n=${!n}")
done
if ((share)); then
	args+=(--share "$bindir")
	cmd=("/host/$(basename "$bin")")
else
	args+=(--payload "$bin")
	cmd=("./$(basename "$bin")")
fi

if [[ ${HADIRECTOR_VM_VERBOSE:-} == 1 ]]; then
	exec "$HERE/run.sh" "${args[@]}" -- "${cmd[@]}" ${targs[@]+"${targs[@]}"}
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$HERE/run.sh" "${args[@]}" -- "${cmd[@]}" ${targs[@]+"${targs[@]}"} 2>"$log" &
child=$!
# go test signals only us (SIGQUIT at its timeout): pass it on so run.sh stops qemu.
trap 'kill -TERM "$child" 2>/dev/null' INT TERM QUIT HUP
rc=0
wait "$child" || rc=$?
while kill -0 "$child" 2>/dev/null; do # a trapped signal interrupted wait
	rc=0
	wait "$child" || rc=$?
done
((rc == 0)) || cat "$log" >&2
exit $rc
