#!/usr/bin/env bash
# run.sh - boot hadirector's test VM, run ONE command inside, stream its
# output, exit with its exit code.
#
#   run.sh [--payload PATH]... [--share DIR] [--env NAME=VALUE]...
#          [--timeout SEC] [--mem MB] [--smp N] [--keep] [--] CMD [ARG...]
#
#   --payload PATH   file or directory copied into the guest's /payload, the
#                    command's cwd (repeatable)
#   --share DIR      host dir mounted read-write at /host over virtio-9p (for
#                    coverage profiles or bulk output; adds ~0.4 s to boot)
#   --env NAME=VAL   environment variable for CMD; the guest does not inherit
#                    the host environment (repeatable). HADIRECTOR_VMTEST=1 is
#                    always set by the guest's init.
#   --timeout SEC    wall-clock limit for the whole VM (default 600)
#   --smp N          guest CPUs (default: HADIRECTOR_VM_SMP, else the host's,
#                    at most 4; with tcg
#                    each guest CPU is a host thread, and one emulated CPU
#                    under the load of the connection-sync tests stalls for
#                    hundreds of milliseconds and drops packets)
#   --keep           keep the run dir (console.log, results.log, qemu.log)
#
# stdout is exactly what CMD printed (stdout and stderr merged: one serial
# line), so `go test -exec` / test2json see a normal test binary. Our own
# chatter (HADIRECTOR-VM-* markers, timing, errors) goes to stderr.
#
# Exit code: CMD's; 124 if the VM hit --timeout; 125 if the VM could not be
# started or the guest died without reporting an exit code (kernel panic,
# broken kernel image, init crash) - the console tail is printed then. Never 0
# unless CMD really ran and exited 0.
#
# Env:
#   HADIRECTOR_VM_WORK    cache dir (default /var/tmp/hadirector-vm), see build-image.sh
#   HADIRECTOR_VM_KERNEL  boot this kernel image instead of the cached one
#                         (debugging; also how the boot-failure path is tested)
#   HADIRECTOR_VM_ACCEL   kvm|tcg. Default: kvm only if kvm_intel/kvm_amd is
#                         loaded. The dev/CI hosts' /dev/kvm is PVM-only and
#                         cannot boot a stock kernel (qemu aborts or hangs),
#                         so they use tcg (software emulation, ~3 s per boot).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${HADIRECTOR_VM_WORK:-/var/tmp/hadirector-vm}
SMP=${HADIRECTOR_VM_SMP:-$(nproc 2>/dev/null || echo 1)}
[[ -n ${HADIRECTOR_VM_SMP:-} ]] || ((SMP <= 4)) || SMP=4
TIMEOUT=600 MEM=1024 SHARE="" KEEP=0
PAYLOADS=() ENVS=()
usage() { echo "usage: run.sh [--payload PATH]... [--share DIR] [--env K=V]... [--timeout S] [--mem MB] [--smp N] [--keep] [--] CMD [ARG...]" >&2; exit 2; }
while (($#)); do
	case $1 in
	--payload) PAYLOADS+=("$2"); shift 2 ;;
	--share) SHARE=$(cd "$2" && pwd); shift 2 ;;
	--env) [[ $2 == [A-Za-z_]*=* ]] || usage; ENVS+=("$2"); shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--mem) MEM=$2; shift 2 ;;
	--smp) SMP=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--) shift; break ;;
	-*) echo "run.sh: unknown option $1" >&2; usage ;;
	*) break ;;
	esac
done
(($#)) || usage
fail() { echo "[vm] $*" >&2; exit 125; } # 125: "no result", never confused with a test's rc

# Base image: idempotent, ~0.1 s when up to date.
"$HERE/build-image.sh" || fail "image build failed (build-image.sh rc=$?)"
BASE=$WORK/base.cpio
# PVH boot of the uncompressed ELF kernel: ~2.3 s to the payload under TCG,
# vs ~5.5 s for the bzImage (xz decompression inside the guest).
KERNEL=${HADIRECTOR_VM_KERNEL:-$WORK/vmlinux}
[[ -n ${HADIRECTOR_VM_KERNEL:-} || -f $KERNEL ]] || KERNEL=$WORK/vmlinuz
[[ -f $KERNEL ]] || fail "kernel image $KERNEL does not exist"

RUN=$(mktemp -d "$WORK/run.XXXXXX")
qpid="" tpid="" apid=""
# shellcheck disable=SC2317 # invoked from the EXIT trap
cleanup() {
	# A second signal (Ctrl-C reaches us and our caller, who passes on a
	# SIGTERM) must not cut the cleanup short and leave qemu, tail or awk.
	trap '' INT TERM QUIT HUP
	for p in $qpid $tpid $apid; do kill "$p" 2>/dev/null || true; done
	((KEEP)) || rm -rf "$RUN"
}
trap cleanup EXIT
# go test sends SIGQUIT when its own timeout fires; INT/TERM from the user or CI.
trap 'echo "[vm] interrupted" >&2; exit 130' INT TERM QUIT HUP

# --- payload: a second, uncompressed cpio appended to the base one (the kernel
# unpacks concatenated archives in order; gunzip in a TCG guest is slower than
# loading the bytes).
mkdir -p "$RUN/p/payload"
for p in ${PAYLOADS[@]+"${PAYLOADS[@]}"}; do
	[[ -e $p ]] || fail "payload $p does not exist"
	cp -a "$p" "$RUN/p/payload/"
done
{
	for e in ${ENVS[@]+"${ENVS[@]}"}; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
	printf '%q ' "$@"
	echo
} >"$RUN/p/payload/.cmd"
(cd "$RUN/p" && find payload | cpio -o -H newc --owner 0:0 --quiet) >"$RUN/payload.cpio"
cp "$BASE" "$RUN/initrd"
truncate -s %512 "$RUN/initrd" # the next archive must start 4-byte aligned; the kernel skips zero padding
cat "$RUN/payload.cpio" >>"$RUN/initrd"

# --- accelerator
ACCEL=${HADIRECTOR_VM_ACCEL:-}
if [[ -z $ACCEL ]]; then
	ACCEL=tcg
	if [[ -r /dev/kvm && -w /dev/kvm ]] && [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]]; then
		ACCEL=kvm
	fi
fi
# tcg: MTTCG (one host thread per vCPU); 'max' = the newest ISA qemu emulates.
# shellcheck disable=SC2054 # the comma belongs to the -accel value
case $ACCEL in
kvm) ACCEL_ARGS=(-accel kvm -cpu host) ;;
tcg) ACCEL_ARGS=(-accel tcg,thread=multi -cpu max) ;;
*) fail "HADIRECTOR_VM_ACCEL must be kvm or tcg, not $ACCEL" ;;
esac

APPEND="console=ttyS0 quiet panic=-1 oops=panic mitigations=off"
SHARE_ARGS=()
if [[ -n $SHARE ]]; then
	SHARE_ARGS=(-virtfs "local,path=$SHARE,mount_tag=host,security_model=none,id=host")
	APPEND+=" hadirector_vm.share"
fi

: >"$RUN/results.log"
t0=$(date +%s.%N)
# -nic none: the guest has no link to any network; test topologies are veth
# pairs and network namespaces inside the guest, so no packet leaves the VM.
# -no-reboot + panic=-1: a guest panic ends qemu instead of rebooting.
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 \
	-M pc "${ACCEL_ARGS[@]}" -m "$MEM" -smp "$SMP" \
	-nodefaults -no-user-config -display none -nic none -no-reboot \
	-kernel "$KERNEL" -initrd "$RUN/initrd" -append "$APPEND" \
	-serial "file:$RUN/console.log" -serial "file:$RUN/results.log" \
	${SHARE_ARGS[@]+"${SHARE_ARGS[@]}"} >"$RUN/qemu.log" 2>&1 &
qpid=$!

# Stream the results channel live: payload lines -> stdout, marker lines ->
# stderr. A marker may follow output that lacked a final newline: split it off.
mkfifo "$RUN/stream"
awk '{ if (!match($0, /HADIRECTOR-VM-(BOOTED|START|WARN|EXIT)/)) { print; fflush(); next }
       if (RSTART > 1) { print substr($0, 1, RSTART - 1); fflush() }
       print "[vm] " substr($0, RSTART) > "/dev/stderr"; fflush("/dev/stderr") }' <"$RUN/stream" &
apid=$!
tail -n +1 -f "$RUN/results.log" >"$RUN/stream" &
tpid=$!

qrc=0
wait $qpid || qrc=$?
qpid=""
sleep 0.2 # let tail copy the last bytes; awk ends at EOF
kill $tpid 2>/dev/null || true
wait $tpid $apid 2>/dev/null || true
tpid="" apid=""
t1=$(date +%s.%N)

line=$(grep -ao 'HADIRECTOR-VM-EXIT=.*' "$RUN/results.log" | tail -1 || true)
if [[ -n $line ]]; then
	rc=${line#HADIRECTOR-VM-EXIT=}
	rc=${rc%% *}
	ready=$(grep -ao 'HADIRECTOR-VM-START uptime=[0-9.]*s' "$RUN/results.log" | sed 's/.*=//' || true)
	printf '[vm] accel=%s payload-start=%s host-wall=%.1fs rc=%s\n' \
		"$ACCEL" "$ready" "$(awk "BEGIN {print $t1 - $t0}")" "$rc" >&2
elif ((qrc == 124 || qrc == 137)); then
	echo "[vm] TIMEOUT: VM killed after ${TIMEOUT}s (accel=$ACCEL); console tail:" >&2
	tail -n 30 "$RUN/console.log" >&2
	rc=124
else
	echo "[vm] FAILED: the guest did not report an exit code (qemu rc=$qrc, kernel $KERNEL); console tail:" >&2
	tail -n 40 "$RUN/console.log" >&2
	echo "[vm] qemu output:" >&2
	cat "$RUN/qemu.log" >&2
	rc=125
fi
((KEEP)) && echo "[vm] logs kept in $RUN" >&2
exit "$rc"
