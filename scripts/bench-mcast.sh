#!/bin/bash
# bench-mcast.sh SHOAL SHOAL_AGENT
#
# Multicast loads on a namespace test bed (a bridge, a server and up to 8
# nodes joined by veth pairs, nothing on the host's own network), beside
# udpcast the way Clonezilla and FOG use it: `udp-sender` of the stored
# `partclone.ext4 -c | zstd` image into `udp-receiver | zstd -d |
# partclone.ext4 -r`, on the same bridge, in the same run.
#
# Cases (each the best of RUNS; every target is checked afterwards):
#   - the benchmark disk of bench.sh to 1, 4 and 8 receivers, writing to
#     files and fsyncing; shoal and udpcast;
#   - a loss sweep at 4 receivers (0, 1, 5, 10% of UDP dropped at every
#     node by nftables); shoal and udpcast;
#   - 8 receivers at 0 and 5% loss for shoal's multicast efficiency;
#   - shoal with --verify-only at 1 and 8 receivers (the protocol alone);
#   - a raw 1 GiB random file to 4 receivers writing to /dev/null.
# Efficiency is payload bytes the sender sent over the image's bytes.
#
# Environment: BENCH_DIR (default /var/tmp/shoal-bench; the disk is shared
# with bench.sh), RUNS (default 2), RATE_MBIT (shoal's ceiling, default
# 2000), CASES (space-separated subset of: disk loss eff verify raw, and
# quick: shoal alone at 4 and 8 receivers, for comparing two builds),
# KEEP=1 to keep the work directory (logs, reports) for a look afterwards,
# AGENT_WRAP to run each agent under a command (e.g. "/usr/bin/time -v").
set -euo pipefail
shopt -s inherit_errexit
shoal=$(realpath "$1")
agent=$(realpath "$2")
dir=${BENCH_DIR:-/var/tmp/shoal-bench}
runs=${RUNS:-2}
rate=${RATE_MBIT:-2000}
cases=${CASES:-disk loss eff verify raw}
here=$(cd "$(dirname "$0")" && pwd)
disk=$dir/disk.img
work=$dir/mcast
nodes=8
id=smb$$

mkdir -p "$work"
if [ ! -f "$disk" ]; then
  echo "bench-mcast: making the benchmark disk" >&2
  "$here/make-disk.sh" "$disk" 4096 2048 1024 > "$dir/disk.files"
  echo "4096 2048 1024" > "$dir/disk.params"
fi

# --- the bed -----------------------------------------------------------
ns() { echo "$id-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
cleanup() {
  set +e
  for n in srv $(seq 1 $nodes) hub; do
    local name; name=$(ns "$n")
    if ip netns list | grep -qw "$name"; then
      for p in $(ip netns pids "$name"); do kill -9 "$p" 2>/dev/null; done
      ip netns del "$name"
    fi
  done
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$(ns hub)"
in_ns hub ip link add br0 type bridge
# No snooping: every port gets the group's traffic, as on a plain switch.
in_ns hub ip link set br0 type bridge mcast_snooping 0
in_ns hub ip link set br0 up
in_ns hub ip link set lo up
attach() { # attach NAME ADDR
  local n=$1 addr=$2 port="p$1"
  ip netns add "$(ns "$n")"
  ip link add "$port" netns "$(ns hub)" type veth peer name eth0 netns "$(ns "$n")"
  in_ns hub ip link set "$port" master br0 up
  in_ns "$n" ip link set lo up
  in_ns "$n" ip addr add "$addr/24" brd + dev eth0  # udpcast finds its peers by broadcast
  in_ns "$n" ip link set eth0 up
  in_ns "$n" ip route add 224.0.0.0/4 dev eth0
  in_ns "$n" nft add table inet bench
  in_ns "$n" nft add chain inet bench input '{ type filter hook input priority 0; }'
}
attach srv 10.99.0.1
for i in $(seq 1 $nodes); do attach "$i" "10.99.0.$((10 + i))"; done
set_loss() { # set_loss PERCENT: at every node
  for i in $(seq 1 $nodes); do
    in_ns "$i" nft flush chain inet bench input
    if [ "$1" -gt 0 ]; then
      in_ns "$i" nft add rule inet bench input meta l4proto udp numgen random mod 100 '<' "$1" drop
    fi
  done
}

# --- images --------------------------------------------------------------
store=$work/store
export SHOAL_DATA_DIR=$store
echo "bench-mcast: capturing the disk and a raw 1 GiB random file" >&2
"$shoal" -q image capture "$disk" --name disk >/dev/null
head -c 1G /dev/urandom > "$work/raw.bin"
"$shoal" -q image import "$work/raw.bin" --name raw --level 1 >/dev/null
key=$("$shoal" key)
image_bytes() { "$shoal" image info "$1" --json | python3 -c '
import json, sys
m = json.load(sys.stdin)["manifest"]
print(sum(c["csize"] for s in m["segments"] for c in s["chunks"]))'; }
disk_bytes=$(image_bytes disk)
raw_bytes=$(image_bytes raw)
partclone.ext4 -q -c -s "$disk" -o - 2>/dev/null | zstd -q -3 -T0 -f -o "$work/pc.zst"
disk_size=$(stat -c %s "$disk")

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }

# --- shoal ---------------------------------------------------------------
# ours IMAGE N [verify|null]: prints "SECONDS EFFICIENCY"
ours() {
  local image=$1 n=$2 mode=${3:-write} tag=$1-$2-${3:-write}; local log=$work/server-$tag.log
  local bytes=$disk_bytes
  [ "$image" = raw ] && bytes=$raw_bytes
  ip netns exec "$(ns srv)" "$shoal" server --listen 10.99.0.1:4870 --mcast-iface 10.99.0.1 \
    --rate-mbit "$rate" --idle-secs 2 > "$log" 2>&1 &
  local server=$!
  for _ in $(seq 100); do
    in_ns 1 curl -sf http://10.99.0.1:4870/v1/key >/dev/null 2>&1 && break
    sleep 0.05
  done
  local pids=() i t0
  for i in $(seq 1 "$n"); do
    rm -f "$work/t$i.img"
    case $mode in
      verify) truncate -s "$disk_size" "$work/t$i.img" ;;
    esac
  done
  drop
  t0=$(now)
  for i in $(seq 1 "$n"); do
    local dest=$work/t$i.img flags=()
    [ "$mode" = verify ] && flags=(--verify-only)
    [ "$mode" = null ] && dest=/dev/null
    in_ns "$i" ${AGENT_WRAP:-} "$agent" load --server http://10.99.0.1:4870 --image "$image" --key "$key" \
      "${flags[@]}" "$dest" --json > "$work/r$i-$tag.json" 2> "$work/r$i-$tag.log" &
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  local secs; secs=$(since "$t0")
  if [ "$failed" = 1 ]; then
    echo "bench-mcast: a shoal receiver failed:" >&2
    cat "$work"/r*-"$tag".log >&2
    kill "$server"; return 1
  fi
  # The session logs its totals when it goes idle.
  for _ in $(seq 200); do grep -q 'session idle' "$log" && break; sleep 0.05; done
  kill "$server"; wait "$server" 2>/dev/null || true
  local sent; sent=$(grep -o 'payload_bytes_sent=[0-9]*' "$log" | tail -1 | cut -d= -f2)
  if [ "$mode" = write ]; then
    for i in $(seq 1 "$n"); do
      if [ "$image" = disk ]; then e2fsck -fn "$work/t$i.img" >/dev/null; fi
      rm -f "$work/t$i.img"
    done
  fi
  printf '%.2f %.3f\n' "$secs" "$(echo "${sent:-0} / $bytes" | bc -l)"
}

# --- udpcast ---------------------------------------------------------------
# theirs FILE N [disk|null]: prints SECONDS
theirs() {
  local file=$1 n=$2 mode=${3:-disk} port=$((9000 + RANDOM % 1000 * 2))
  local pids=() i t0
  for i in $(seq 1 "$n"); do
    rm -f "$work/u$i.img"
    [ "$mode" = disk ] && truncate -s "$disk_size" "$work/u$i.img"
  done
  drop
  t0=$(now)
  for i in $(seq 1 "$n"); do
    if [ "$mode" = disk ]; then
      in_ns "$i" bash -o pipefail -c "udp-receiver --interface eth0 --portbase $port --nokbd --file /dev/stdout 2>/dev/null |
        zstd -q -d | partclone.ext4 -q -r -s - --overwrite $work/u$i.img >/dev/null 2>&1 && sync $work/u$i.img" &
    else
      in_ns "$i" udp-receiver --interface eth0 --portbase "$port" --nokbd --file /dev/null >/dev/null 2>&1 &
    fi
    pids+=($!)
  done
  ip netns exec "$(ns srv)" udp-sender --interface eth0 --portbase "$port" --nokbd --min-receivers "$n" \
    --file "$file" >/dev/null 2>&1 &
  local sender=$!
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  local secs; secs=$(since "$t0")
  wait "$sender" || true
  if [ "$failed" = 1 ]; then echo "bench-mcast: a udpcast receiver failed" >&2; return 1; fi
  if [ "$mode" = disk ]; then
    for i in $(seq 1 "$n"); do e2fsck -fn "$work/u$i.img" >/dev/null; rm -f "$work/u$i.img"; done
  fi
  printf '%.2f\n' "$secs"
}

# --- runs --------------------------------------------------------------------
declare -A best eff
record() { # record KEY SECONDS [EFF]
  if [ -z "${best[$1]:-}" ] || (( $(echo "$2 < ${best[$1]}" | bc -l) )); then
    best[$1]=$2
    [ -n "${3:-}" ] && eff[$1]=$3
  fi
  printf 'bench-mcast: %-24s %7.2f s %s\n' "$1" "$2" "${3:+efficiency $3}" >&2
}
run_ours() { local k=$1; shift; local r; r=$(ours "$@") || exit 1; record "$k" ${r% *} ${r#* }; }
run_theirs() { local k=$1; shift; local r; r=$(theirs "$@") || exit 1; record "$k" "$r"; }

for r in $(seq "$runs"); do
  echo "bench-mcast: run $r of $runs" >&2
  for c in $cases; do
    case $c in
      disk)
        set_loss 0
        for n in 1 4 8; do
          run_ours "shoal disk $n" disk "$n"
          run_theirs "udpcast disk $n" "$work/pc.zst" "$n"
        done ;;
      loss)
        for l in 1 5 10; do
          set_loss "$l"
          run_ours "shoal disk 4 loss $l%" disk 4
          run_theirs "udpcast disk 4 loss $l%" "$work/pc.zst" 4
        done
        set_loss 0 ;;
      quick)
        set_loss 0
        run_ours "shoal disk 4" disk 4
        run_ours "shoal disk 8" disk 8 ;;
      eff)
        set_loss 5
        run_ours "shoal disk 8 loss 5%" disk 8
        set_loss 0 ;;
      verify)
        set_loss 0
        run_ours "shoal verify-only 1" disk 1 verify
        run_ours "shoal verify-only 8" disk 8 verify ;;
      raw)
        set_loss 0
        run_ours "shoal raw 4 /dev/null" raw 4 null
        run_theirs "udpcast raw 4 /dev/null" "$work/raw.bin" 4 null ;;
    esac
  done
done

echo
echo "Multicast, best of $runs; shoal at a ${rate} Mbit/s ceiling; disk image $((disk_bytes >> 20)) MiB, raw image $((raw_bytes >> 20)) MiB"
echo
echo "| case | shoal s | efficiency | udpcast s | shoal/udpcast |"
echo "|---|---:|---:|---:|---:|"
row() { # row LABEL SHOAL_KEY UDPCAST_KEY
  local s=${best[$2]:-} u=${best[${3:-none}]:-} ratio=""
  [ -n "$s" ] && [ -n "$u" ] && ratio=$(printf '%.2f' "$(echo "$s / $u" | bc -l)")
  printf '| %s | %s | %s | %s | %s |\n' "$1" "${s:--}" "${eff[$2]:--}" "${u:--}" "${ratio:--}"
}
for n in 1 4 8; do row "disk, $n receivers" "shoal disk $n" "udpcast disk $n"; done
for l in 1 5 10; do row "disk, 4 receivers, $l% loss" "shoal disk 4 loss $l%" "udpcast disk 4 loss $l%"; done
row "disk, 8 receivers, 5% loss" "shoal disk 8 loss 5%"
row "disk, verify-only, 1 receiver" "shoal verify-only 1"
row "disk, verify-only, 8 receivers" "shoal verify-only 8"
row "raw 1 GiB, 4 receivers, /dev/null" "shoal raw 4 /dev/null" "udpcast raw 4 /dev/null"
