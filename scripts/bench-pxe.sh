#!/bin/bash
# bench-pxe.sh SHOAL_PXE_BENCH_BINARY
#
# The PXE services under load, each beside a peer in the same run:
#
# - TFTP: a 32 MiB random file fetched from our server and from tftpd-hpa
#   by curl, tftp-hpa and atftp, at block sizes 512 and 1468 and with a
#   window where the client asks for one. Best of RUNS, in MiB/s; every
#   fetched copy's SHA-256 is checked, so a broken transfer fails the run.
# - DHCP: Kea's perfdhcp doing full DISCOVER/OFFER/REQUEST/ACK exchanges
#   for DHCP_CLIENTS distinct MACs at each offered rate of DHCP_RATES for
#   DHCP_SECONDS, against our full-mode server with and without its lease
#   file, and against dnsmasq. Every run starts from an empty pool. Best
#   of RUNS by completed exchanges per second.
#
# Servers and clients run in two network namespaces joined by a veth pair
# (MTU 1500, 10.98.0.0/16) that this script makes and deletes, even on
# failure; the host's own network is never touched. Prints Markdown
# tables for BENCHMARKS.md on stdout, progress on stderr.
#
# Environment: PXE_BENCH_TMP (default /var/tmp; a fresh directory is made
# in it and removed at the end), RUNS (3),
# TFTP_MIB (32), DHCP_CLIENTS (60000), DHCP_RATES ("500 1000 2000 4000"),
# DHCP_SECONDS (5).
set -euo pipefail
bench=$(realpath "$1")
runs=${RUNS:-3}
tftp_mib=${TFTP_MIB:-32}
dhcp_clients=${DHCP_CLIENTS:-60000} dhcp_rates=${DHCP_RATES:-"500 1000 2000 4000"} dhcp_seconds=${DHCP_SECONDS:-5}

for tool in ip ss curl tftp atftp perfdhcp dnsmasq in.tftpd sha256sum bc; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null || { echo "bench-pxe: $tool missing (make deps)" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin:/sbin"

srv=shoalpxe$$s cli=shoalpxe$$c
srv_ip=10.98.0.1 cli_ip=10.98.0.2
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for ns in $srv $cli; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  [ -z "${dir:-}" ] || rm -rf "$dir"
  exit $rc
}
trap cleanup EXIT INT TERM

dir=$(mktemp -d "${PXE_BENCH_TMP:-/var/tmp}/shoal-bench-pxe.XXXXXX")
mkdir "$dir/root"
# tftpd-hpa drops to the tftp user and chroots into the root.
chmod 755 "$dir" "$dir/root"
ip netns add $srv
ip netns add $cli
ip -n $srv link add veth-s type veth peer name veth-c netns $cli
ip -n $srv addr add $srv_ip/16 dev veth-s
ip -n $cli addr add $cli_ip/16 dev veth-c
for ns in $srv $cli; do ip -n "$ns" link set lo up; done
ip -n $srv link set veth-s up
ip -n $cli link set veth-c up

# Servers start as `ip netns exec $srv CMD &`, never through a function,
# so that $! is the server itself (ip execs it) and stop() really stops it.
in_srv() { ip netns exec $srv "$@"; }
in_cli() { ip netns exec $cli "$@"; }
now() { date +%s.%N; }
# wait_udp PORT: until something in the server namespace listens on it.
wait_udp() {
  for _ in $(seq 100); do
    [ -n "$(in_srv ss -Hlun "sport = :$1")" ] && return 0
    sleep 0.05
  done
  echo "bench-pxe: nothing listens on udp port $1" >&2
  return 1
}
# stop PID: ends a server this script started and waits for it.
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# ---- TFTP -------------------------------------------------------------

file=$dir/root/file.img
head -c "$((tftp_mib << 20))" /dev/urandom >"$file"
chmod 644 "$file"
sum=$(sha256sum <"$file")
bytes=$(stat -c %s "$file")

ip netns exec $srv "$bench" tftp-serve --root "$dir/root" --listen $srv_ip:69 2>"$dir/shoal-tftp.log" &
pids+=($!)
ip netns exec $srv in.tftpd -L -s "$dir/root" -a $srv_ip:6969 2>"$dir/tftpd-hpa.log" &
pids+=($!)
wait_udp 69
wait_udp 6969

# fetch PORT CASE: one fetch of the file with the client CASE names; the
# client's messages go to $dir/client.log.
fetch() {
  local port=$1 out=$dir/fetched
  rm -f "$out"
  exec 3>&2 2>"$dir/client.log"
  case $2 in
    curl-512) in_cli curl -sS --max-time 300 --tftp-blksize 512 -o "$out" "tftp://$srv_ip:$port/file.img" ;;
    curl-1468) in_cli curl -sS --max-time 300 --tftp-blksize 1468 -o "$out" "tftp://$srv_ip:$port/file.img" ;;
    tftp-hpa) in_cli tftp -m binary $srv_ip "$port" -c get file.img "$out" >/dev/null ;;
    atftp-1468) in_cli atftp --option "blksize 1468" -g -r file.img -l "$out" $srv_ip "$port" ;;
    atftp-1468-w8) in_cli atftp --option "blksize 1468" --option "windowsize 8" -g -r file.img -l "$out" $srv_ip "$port" ;;
    atftp-1468-w32) in_cli atftp --option "blksize 1468" --option "windowsize 32" -g -r file.img -l "$out" $srv_ip "$port" ;;
  esac
  local rc=$?
  exec 2>&3 3>&-
  return $rc
}
tftp_cases="curl-512 tftp-hpa curl-1468 atftp-1468 atftp-1468-w8 atftp-1468-w32"
declare -A tftp_best
for i in $(seq "$runs"); do
  echo "bench-pxe: tftp run $i of $runs" >&2
  for c in $tftp_cases; do
    for server in shoal:69 tftpd-hpa:6969; do
      name=${server%%:*} port=${server#*:}
      t0=$(now)
      fetch "$port" "$c" || true
      t1=$(now)
      if [ "$(sha256sum <"$dir/fetched" 2>/dev/null)" != "$sum" ]; then
        echo "bench-pxe: $c from $name did not fetch the same bytes:" >&2
        cat "$dir/client.log" >&2
        exit 1
      fi
      mibs=$(echo "$bytes / 1048576 / ($t1 - $t0)" | bc -l)
      printf 'bench-pxe: %-15s %-10s %7.1f MiB/s\n' "$c" "$name" "$mibs" >&2
      key="$c $name"
      if [ -z "${tftp_best[$key]:-}" ] || (($(echo "$mibs > ${tftp_best[$key]}" | bc -l))); then
        tftp_best[$key]=$mibs
      fi
    done
  done
done
for p in "${pids[@]}"; do stop "$p"; done
pids=()
echo "bench-pxe: shoal tftp counters: $(tail -1 "$dir/shoal-tftp.log")" >&2

# ---- DHCP -------------------------------------------------------------

pool_first=10.98.1.0 pool_last=10.98.255.254
# start_dhcp SERVER: an empty-pool DHCP server in the server namespace.
start_dhcp() {
  rm -f "$dir"/leases*
  case $1 in
    shoal-leasefile)
      ip netns exec $srv "$bench" dhcp-serve --server-ip $srv_ip --netmask 255.255.0.0 --pool $pool_first-$pool_last \
        --iface veth-s --lease-file "$dir/leases" 2>>"$dir/shoal-dhcp.log" &
      ;;
    shoal-memory)
      ip netns exec $srv "$bench" dhcp-serve --server-ip $srv_ip --netmask 255.255.0.0 --pool $pool_first-$pool_last \
        --iface veth-s 2>>"$dir/shoal-dhcp.log" &
      ;;
    dnsmasq)
      ip netns exec $srv dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --pid-file= --interface=veth-s \
        --bind-interfaces --dhcp-range=$pool_first,$pool_last,255.255.0.0,1h --dhcp-lease-max=70000 \
        --dhcp-leasefile="$dir/leases.dnsmasq" --no-ping --quiet-dhcp --log-facility="$dir/dnsmasq.log" &
      ;;
  esac
  dhcp_pid=$!
  pids+=("$dhcp_pid")
  wait_udp 67
}
# perf RATE: one perfdhcp run; prints "started completed latency_ms".
# perfdhcp acts as a relay (giaddr = its address), so every reply is a
# unicast to it on port 67.
perf() {
  local out
  # Exit status 3 means some exchanges were not completed: that is a
  # figure, not a failure.
  out=$(in_cli perfdhcp -4 -l $cli_ip -R "$dhcp_clients" -r "$1" -p "$dhcp_seconds" -W 1000000 $srv_ip 2>&1) || {
    local rc=$?
    [ $rc -eq 3 ] || { echo "bench-pxe: perfdhcp failed ($rc): $out" >&2; exit 1; }
  }
  echo "$out" | awk '
    /Statistics for: DISCOVER-OFFER/ { s = "do" }
    /Statistics for: REQUEST-ACK/ { s = "ra" }
    /^sent packets:/ && s == "do" { started = $3 }
    /^received packets:/ && s == "ra" { completed = $3 }
    /^avg delay:/ { lat += $3 }
    END { if (completed == "") exit 1; print started, completed, lat }'
}
dhcp_servers="shoal-leasefile shoal-memory dnsmasq"
declare -A dhcp_best
for i in $(seq "$runs"); do
  echo "bench-pxe: dhcp run $i of $runs" >&2
  for rate in $dhcp_rates; do
    for server in $dhcp_servers; do
      start_dhcp "$server"
      read -r started completed lat < <(perf "$rate")
      stop "$dhcp_pid"
      failed=$((started - completed))
      # perfdhcp's own "Rate" divides by its exit wait too: count only
      # the sending period.
      got=$(echo "$completed / $dhcp_seconds" | bc -l)
      printf 'bench-pxe: %-16s offered %5s/s: %8.1f exchanges/s, %6s of %6s not completed, %.2f ms\n' \
        "$server" "$rate" "$got" "$failed" "$started" "$lat" >&2
      key="$server $rate"
      if [ -z "${dhcp_best[$key]:-}" ] || (($(echo "$got > ${dhcp_best[$key]%% *}" | bc -l))); then
        dhcp_best[$key]="$got $failed $started $lat"
      fi
    done
  done
done
echo "bench-pxe: shoal dhcp counters, last run: $(tail -1 "$dir/shoal-dhcp.log")" >&2

# ---- tables -----------------------------------------------------------

label() {
  case $1 in
    curl-512) echo "curl --tftp-blksize 512 | 512 | 1" ;;
    tftp-hpa) echo "tftp-hpa -m binary (no options) | 512 | 1" ;;
    curl-1468) echo "curl --tftp-blksize 1468 | 1468 | 1" ;;
    atftp-1468) echo "atftp blksize 1468 | 1468 | 1" ;;
    atftp-1468-w8) echo "atftp blksize 1468 windowsize 8 | 1468 | 8 asked" ;;
    atftp-1468-w32) echo "atftp blksize 1468 windowsize 32 | 1468 | 32 asked" ;;
    shoal-leasefile) echo "shoal, lease file (fsync per change)" ;;
    shoal-memory) echo "shoal, no lease file" ;;
    dnsmasq) echo "dnsmasq $(dnsmasq --version | awk 'NR==1 {print $3}'), lease file (fsync per change)" ;;
  esac
}
echo
echo "TFTP: ${tftp_mib} MiB random file over a veth pair (MTU 1500) between two namespaces; best of $runs, MiB/s; every copy's SHA-256 checked."
echo
echo "| client | blksize | window | shoal | tftpd-hpa | shoal / tftpd-hpa |"
echo "|---|---:|---:|---:|---:|---:|"
for c in $tftp_cases; do
  ours=${tftp_best[$c shoal]} theirs=${tftp_best[$c tftpd-hpa]}
  printf '| %s | %.1f | %.1f | %.2f |\n' "$(label "$c")" "$ours" "$theirs" "$(echo "$ours / $theirs" | bc -l)"
done
echo
echo "DHCP: perfdhcp $(perfdhcp -v 2>&1 | awk '{print $2}'), full DORA exchanges, $dhcp_clients client MACs, ${dhcp_seconds} s per run from an empty pool; best of $runs by completed exchanges/s."
echo
echo "| server | offered (DORA/s) | completed (DORA/s) | not completed | mean latency DO+RA (ms) |"
echo "|---|---:|---:|---:|---:|"
for rate in $dhcp_rates; do
  for server in $dhcp_servers; do
    read -r got failed started lat <<<"${dhcp_best[$server $rate]}"
    printf '| %s | %s | %.0f | %s of %s | %.2f |\n' "$(label "$server")" "$rate" "$got" "$failed" "$started" "$lat"
  done
done
