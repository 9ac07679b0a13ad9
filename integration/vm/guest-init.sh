#!/bin/sh
# guest-init.sh - /init (PID 1) of hadirector's test VM; runs under busybox sh.
#
# Contract with run.sh:
#   ttyS0          kernel console (kept in console.log on the host, shown on crash)
#   ttyS1          results channel: everything the payload prints, then one
#                  last line "HADIRECTOR-VM-EXIT=<rc> ..." that run.sh turns
#                  into its own exit code
#   /payload/.cmd  the command line to run (written by run.sh), cwd /payload
#   cmdline "hadirector_vm.share"  mount the host's 9p share at /host (rw)
# The payload always sees HADIRECTOR_VMTEST=1: tests use it to know that they
# are in the VM, where a missing IPVS is a failure, not a reason to skip.
# When the payload ends the VM powers off. If this script dies the kernel
# panics (panic=-1, qemu -no-reboot): qemu exits without an EXIT line, which
# run.sh reports as a guest crash (rc 125).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp

RES=/dev/ttyS1
[ -c $RES ] || RES=/dev/console
stty -F $RES raw -echo 2>/dev/null # raw: no \n -> \r\n on the results port
up() { cut -d' ' -f1 /proc/uptime; }
echo "HADIRECTOR-VM-BOOTED uptime=$(up)s kernel=$(uname -r)" >$RES

hostname hadirector-vm
ip link set lo up
# ip_vs up front (the daemon's preflight would load it too; schedulers
# ip_vs_<name> are autoloaded by the kernel through /sbin/modprobe).
modprobe -a ip_vs veth dummy 2>&1 | sed 's/^/modprobe: /' >$RES

if grep -q 'hadirector_vm.share' /proc/cmdline; then
	modprobe -a virtio_pci 9pnet_virtio 9p
	mkdir -p /host
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 host /host ||
		echo "HADIRECTOR-VM-WARN: 9p mount of the host share failed" >$RES
fi

echo "HADIRECTOR-VM-START uptime=$(up)s" >$RES
cd /payload || cd /
if [ -f /payload/.cmd ]; then
	HADIRECTOR_VMTEST=1 /usr/bin/bash /payload/.cmd </dev/null >$RES 2>&1
	rc=$?
else
	echo "no /payload/.cmd" >$RES
	rc=126
fi
sync
echo "HADIRECTOR-VM-EXIT=$rc uptime=$(up)s" >$RES
poweroff -f
