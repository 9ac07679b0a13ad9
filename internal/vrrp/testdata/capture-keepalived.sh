#!/usr/bin/env bash
# Captures real keepalived VRRP adverts as hex test vectors for advert_test.go.
#
# Run as root on Debian 12 with keepalived and tcpdump installed. Everything happens in a
# network namespace this script creates (a veth pair, 10.99.0.0/24 and fd00:99::/64) and is
# removed on exit, also on failure. Writes keepalived-adverts.hex next to this script.
#
# Not part of CI: the vectors it produced are committed; run it again only to refresh them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here/keepalived-adverts.hex"
ns="hadv-capture-$$"
tmp=$(mktemp -d /tmp/hadv-capture.XXXXXX)
ka_pid=""
td_pid=""

cleanup() {
	[[ -n "$ka_pid" ]] && kill "$ka_pid" 2>/dev/null && sleep 1
	[[ -n "$ka_pid" ]] && kill -9 "$ka_pid" 2>/dev/null
	[[ -n "$td_pid" ]] && kill "$td_pid" 2>/dev/null
	# The VRRP child dies with its parent (PR_SET_PDEATHSIG); make sure anyway.
	if [[ -f "$tmp/vrrp.pid" ]]; then kill -9 "$(cat "$tmp/vrrp.pid")" 2>/dev/null || true; fi
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
ip -n "$ns" link add ka0 type veth peer name ka1
ip -n "$ns" addr add 10.99.0.1/24 dev ka0
ip -n "$ns" addr add fd00:99::1/64 dev ka0 nodad
ip -n "$ns" link set ka1 up
ip -n "$ns" link set ka0 up

cat >"$tmp/keepalived.conf" <<'CONF'
global_defs {
    router_id hadv-capture
}
vrrp_instance V3_IPV4 {
    interface ka0
    state MASTER
    version 3
    virtual_router_id 51
    priority 150
    advert_int 1
    virtual_ipaddress {
        10.99.0.100/24
        10.99.0.101/24
    }
}
vrrp_instance V3_IPV6 {
    interface ka0
    state MASTER
    version 3
    virtual_router_id 52
    priority 200
    advert_int 0.5
    virtual_ipaddress {
        fe80::52/64
        fd00:99::100/64
    }
}
vrrp_instance V2_IPV4 {
    interface ka0
    state MASTER
    version 2
    virtual_router_id 53
    priority 100
    advert_int 1
    virtual_ipaddress {
        10.99.0.102/24
    }
}
CONF

ip netns exec "$ns" tcpdump -i ka0 -nn -U -w "$tmp/vrrp.pcap" 'ip proto 112 or ip6 proto 112' 2>"$tmp/tcpdump.log" &
td_pid=$!
sleep 1
ip netns exec "$ns" keepalived -n -l -D -G -P -R -f "$tmp/keepalived.conf" \
	-p "$tmp/keepalived.pid" -r "$tmp/vrrp.pid" >"$tmp/keepalived.log" 2>&1 &
ka_pid=$!
sleep 7
# SIGTERM: a master sends priority-0 adverts as it stops.
kill -TERM "$ka_pid"
wait "$ka_pid" || true
ka_pid=""
sleep 1
kill "$td_pid"
wait "$td_pid" || true
td_pid=""

cat "$tmp/keepalived.log" >&2
{
	echo "# Real VRRP adverts captured from $(keepalived --version 2>&1 | head -1)"
	echo "# (Debian package $(dpkg-query -W -f='${Version}' keepalived)), $(date -u +%Y-%m-%d), by capture-keepalived.sh."
	echo "# One full IP packet (IPv4 or IPv6 header + VRRP message) per line, in hex, as tcpdump saw it on"
	echo "# ka0 (10.99.0.1/24, fd00:99::1/64, MAC-derived fe80:: link-local)."
	echo "# Duplicates removed; the priority-0 adverts are the ones keepalived sent on SIGTERM."
	echo "# keepalived.conf:"
	sed 's/^/#   /' "$tmp/keepalived.conf"
	tcpdump -r "$tmp/vrrp.pcap" -nn -x 2>/dev/null | awk '
		/^[^ \t]/ { if (pkt != "") print pkt; pkt = ""; next }
		{ for (i = 2; i <= NF; i++) pkt = pkt $i }
		END { if (pkt != "") print pkt }' | awk '!seen[$0]++'
} >"$out"
echo "wrote $(grep -vc '^#' "$out") packets to $out" >&2
