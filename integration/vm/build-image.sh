#!/usr/bin/env bash
# build-image.sh - prepare the kernel and base initramfs of hadirector's test VM.
#
# Why a VM at all: the dev/CI hosts run a kernel without CONFIG_IP_VS, so the
# real IPVS netlink API can only be exercised in a guest. We boot Debian 12's
# stock kernel (CONFIG_IP_VS=m, all schedulers, IPv6) under qemu.
#
# Output, cached in $HADIRECTOR_VM_WORK (default /var/tmp/hadirector-vm; never
# inside the repository):
#   vmlinuz     the Debian kernel (bzImage), fallback boot image
#   vmlinux     the same kernel decompressed: qemu boots it through its PVH
#               entry point, which skips ~3 s of in-guest xz decompression
#   base.cpio   busybox, bash, iproute2 `ip`, ipvsadm, the modules listed
#               below (+ dependencies) and /init (guest-init.sh)
#   debs/       the kernel .deb (~70 MB), kept so that an image rebuild needs
#               no network; the unpacked tree (~400 MB) is thrown away
# run.sh calls this on every run: when everything is up to date it exits in
# ~0.1 s. The per-run payload (test binary, ...) is NOT in base.cpio: run.sh
# appends it as a second cpio archive, so the base is built once.
#
# Runs as root on Debian 12; installs what it needs with apt-get (fresh CI
# machine). It never installs the kernel package (no /boot, no
# update-initramfs): `apt-get download` + `dpkg-deb -x` only.
#
# Env:
#   HADIRECTOR_VM_WORK   cache dir                 (default /var/tmp/hadirector-vm)
#   HADIRECTOR_VM_KPKG   kernel package, e.g. linux-image-6.1.0-56-amd64
#                        (default: what linux-image-amd64 depends on today)
#   HADIRECTOR_VM_FORCE  1: rebuild base.cpio even if it looks up to date
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${HADIRECTOR_VM_WORK:-/var/tmp/hadirector-vm}
mkdir -p "$WORK"
# go test runs several packages in parallel (-p N), each calling run.sh, which
# calls us: build once, the others wait here.
exec 9>"$WORK/.build.lock"
flock 9
log() { echo "[vm-build] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root (apt-get, depmod -b, qemu image build)"

apt_quiet() { # apt-get download as root warns about running unsandboxed; drop that noise
	"$@" 2> >(grep -v 'unsandboxed as root' >&2)
}

# --- 1. host packages ---------------------------------------------------------
# qemu-system-x86: the emulator. busybox-static, ipvsadm, iproute2, bash: copied
# into the guest (the dynamic ones with their shared libraries, found via ldd).
# kmod: depmod/modprobe -d for the guest module tree. cpio: packs the image.
# xz-utils: decompresses the kernel image to vmlinux.
"$HERE/../../scripts/apt-need.sh" qemu-system-x86 busybox-static ipvsadm iproute2 kmod cpio xz-utils

# --- 2. kernel package: resolve and download (not install) ---------------------
resolve_kpkg() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
KPKG=${HADIRECTOR_VM_KPKG:-}
# apt-cache takes ~0.7 s, run.sh calls us once per VM: remember the answer
# until the apt lists change (apt-get update touches /var/lib/apt/lists).
KPKG_CACHE=$WORK/kernel.pkg
if [[ -z $KPKG && -s $KPKG_CACHE && $KPKG_CACHE -nt /var/lib/apt/lists ]]; then
	KPKG=$(<"$KPKG_CACHE")
fi
if [[ -z $KPKG ]]; then
	KPKG=$(resolve_kpkg)
	if [[ -z $KPKG ]]; then # fresh machine: empty apt lists
		apt-get update -qq
		KPKG=$(resolve_kpkg)
	fi
	[[ -n $KPKG ]] || die "cannot resolve the kernel package behind linux-image-amd64"
	echo "$KPKG" >"$KPKG_CACHE"
fi
KVER=${KPKG#linux-image-} # e.g. 6.1.0-56-amd64
mkdir -p "$WORK/debs"
download_kernel() {
	(cd "$WORK/debs" && apt_quiet apt-get download -qq "$KPKG")
}
deb() { compgen -G "$WORK/debs/${KPKG}_*.deb" | head -1; }
if [[ -z $(deb) ]]; then
	log "downloading $KPKG"
	rm -f "$WORK"/debs/*.deb "$WORK"/debs/*.deb.* # older kernels, partial downloads
	if ! download_kernel; then
		# stale apt lists name a kernel ABI the mirror no longer has
		log "download failed; apt-get update and retry"
		apt-get update -qq
		if [[ -z ${HADIRECTOR_VM_KPKG:-} ]]; then
			KPKG=$(resolve_kpkg)
			[[ -n $KPKG ]] || die "cannot resolve the kernel package behind linux-image-amd64"
			echo "$KPKG" >"$KPKG_CACHE"
			KVER=${KPKG#linux-image-}
		fi
		download_kernel
	fi
	[[ -n $(deb) ]] || die "apt-get download $KPKG produced no .deb"
fi
DEB=$(deb)

# --- 3. up to date? -------------------------------------------------------------
# The stamp covers: the kernel .deb, this script, guest-init.sh and the versions
# of the host packages whose binaries we copy into the guest.
STAMP="$(basename "$DEB") $(cat "$HERE/build-image.sh" "$HERE/guest-init.sh" | sha256sum | cut -c1-16)"
STAMP+=" $(dpkg-query -W -f='${Package}=${Version} ' busybox-static ipvsadm iproute2 bash)"
if [[ ${HADIRECTOR_VM_FORCE:-} != 1 && -f $WORK/base.cpio && -f $WORK/vmlinuz &&
	-f $WORK/base.stamp && "$(cat "$WORK/base.stamp")" == "$STAMP" ]]; then
	exit 0
fi
log "building image for $KVER in $WORK"
rm -f "$WORK/base.stamp"

# --- 4. unpack the kernel -----------------------------------------------------
KROOT=$WORK/kernel.tmp
rm -rf "$KROOT"
trap 'rm -rf "$KROOT" "$WORK/rootfs"' EXIT
mkdir -p "$KROOT"
dpkg-deb -x "$DEB" "$KROOT"
[[ -f $KROOT/boot/vmlinuz-$KVER ]] || die "$DEB has no boot/vmlinuz-$KVER"
# The .deb ships no modules.dep (its postinst generates it): make one so that
# `modprobe -d` below can resolve dependencies.
depmod -b "$KROOT" "$KVER"

# --- 5. guest root tree -------------------------------------------------------
ROOT=$WORK/rootfs
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,payload,etc,root}
# netns.NewNamed and `ip netns` use /var/run/netns; /run is a tmpfs in the guest.
mkdir -p "$ROOT/var" && ln -s ../run "$ROOT/var/run"

# busybox: one static binary; applet links are made here, not at boot.
cp /bin/busybox "$ROOT/bin/busybox"
for a in $(/bin/busybox --list); do
	[[ -e $ROOT/bin/$a ]] || ln -s busybox "$ROOT/bin/$a"
done
# The kernel's request_module() (scheduler autoload, genetlink family alias)
# execs /sbin/modprobe; busybox modprobe reads modules.dep/modules.alias.
ln -sf ../bin/busybox "$ROOT/sbin/modprobe"

copy_bin() { # copy_bin HOST_PATH GUEST_PATH: a dynamic binary plus its libraries
	cp -L "$1" "$ROOT/$2"
	ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' |
		while read -r lib; do
			mkdir -p "$ROOT/$(dirname "$lib")"
			cp -Ln "$lib" "$ROOT/$lib"
		done
}
copy_bin /usr/sbin/ipvsadm usr/sbin/ipvsadm
# iproute2: busybox's `ip` has no netns/veth support.
copy_bin /bin/ip usr/sbin/ip
# bash runs the payload. Debian's busybox is built with FEATURE_SH_STANDALONE:
# under `busybox sh` a bare `ip` is ALWAYS the busybox applet whatever PATH
# says; under bash, PATH (/usr/sbin first) finds iproute2's ip.
copy_bin /bin/bash usr/bin/bash
ln -s ../usr/bin/bash "$ROOT/bin/bash"
ln -s ../../bin/busybox "$ROOT/usr/bin/env" # for #!/usr/bin/env scripts

# --- 6. kernel modules --------------------------------------------------------
#   ip_vs*            all of net/netfilter/ipvs (schedulers are autoloaded)
#   veth dummy        test topologies, VIP holders
#   ipip              real servers of IPVS tunnel (TUN) forwarding decapsulate with it
#   bridge            multi-node L2 segments
#   9p 9pnet_virtio virtio_pci   host directory share (run.sh --share)
MODDIR=$KROOT/lib/modules/$KVER
MODS=(veth dummy ipip bridge 9p 9pnet_virtio virtio_pci)
for ko in "$MODDIR"/kernel/net/netfilter/ipvs/*.ko*; do
	m=$(basename "$ko")
	MODS+=("${m%%.ko*}")
done
mkdir -p "$ROOT/lib/modules/$KVER"
for m in "${MODS[@]}"; do
	modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r path; do
	rel=${path#"$MODDIR"/}
	dst=$ROOT/lib/modules/$KVER/$rel
	mkdir -p "$(dirname "$dst")"
	case $path in # Debian 12 ships plain .ko; busybox modprobe wants them plain
	*.xz) xz -dc "$path" >"${dst%.xz}" ;;
	*.zst) zstd -qdc "$path" >"${dst%.zst}" ;;
	*.gz) gzip -dc "$path" >"${dst%.gz}" ;;
	*) cp "$path" "$dst" ;;
	esac
done
cp "$MODDIR"/modules.builtin "$MODDIR"/modules.builtin.modinfo "$MODDIR"/modules.order \
	"$ROOT/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$ROOT" "$KVER" # modules.dep/alias for this subset

install -m 0755 "$HERE/guest-init.sh" "$ROOT/init"
echo "$KVER" >"$ROOT/etc/hadirector-vm-kernel"

# --- 7. kernel images ---------------------------------------------------------
cp "$KROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz.tmp"
# Extract the ELF vmlinux from the bzImage (like the kernel's
# scripts/extract-vmlinux) so qemu can boot it via PVH (Debian: CONFIG_PVH=y).
extract_vmlinux() { # IMG OUT
	local img=$1 out=$2 magic off
	for magic in '\xfd7zXZ\x00:xz -dc' '\x28\xb5\x2f\xfd:zstd -qdc' '\x1f\x8b\x08:gzip -dc'; do
		off=$(LC_ALL=C grep -aboP "${magic%%:*}" "$img" | head -1 | cut -d: -f1) || true
		[[ -n $off ]] || continue
		# trailing data after the compressed stream makes the decompressor fail: ignore rc
		tail -c +$((off + 1)) "$img" | ${magic#*:} >"$out" 2>/dev/null || true
		[[ $(head -c4 "$out" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] && return 0
	done
	rm -f "$out"
	return 1
}
if ! extract_vmlinux "$WORK/vmlinuz.tmp" "$WORK/vmlinux.tmp"; then
	log "WARN: could not extract vmlinux; run.sh will boot the bzImage (~3 s slower)"
fi
mv "$WORK/vmlinuz.tmp" "$WORK/vmlinuz"
rm -f "$WORK/vmlinux"
[[ -f $WORK/vmlinux.tmp ]] && mv "$WORK/vmlinux.tmp" "$WORK/vmlinux"

# --- 8. pack ------------------------------------------------------------------
# Uncompressed: decompressing in a TCG guest costs more than the extra bytes.
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner 0:0 --quiet) >"$WORK/base.cpio.tmp"
mv "$WORK/base.cpio.tmp" "$WORK/base.cpio"
echo "$STAMP" >"$WORK/base.stamp"
log "kernel $KVER: $WORK/vmlinux$([[ -f $WORK/vmlinux ]] || echo ' MISSING (bzImage fallback)')"
log "initrd $WORK/base.cpio ($(du -h "$WORK/base.cpio" | cut -f1), $(find "$ROOT/lib/modules" -name '*.ko' | wc -l) modules)"
