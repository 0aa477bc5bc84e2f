#!/bin/bash
# bench.sh SHOAL_BINARY
#
# Capture and deploy of a 4 GiB ext4 disk holding about 1 GiB of real
# files over about 2 GiB of deleted random data, beside partclone + zstd
# and a plain zstd of the disk, in the same run on the same disk. Page
# caches are dropped before every timed step; every step ends with its
# output fsynced. Prints a Markdown table for BENCHMARKS.md.
#
# Environment: BENCH_DIR (default /var/tmp/shoal-bench), RUNS (default 3),
# DISK_MIB / DELETED_MIB / FILES_MIB to change the disk.
set -euo pipefail
shoal=$(realpath "$1")
dir=${BENCH_DIR:-/var/tmp/shoal-bench}
runs=${RUNS:-3}
disk_mib=${DISK_MIB:-4096} deleted_mib=${DELETED_MIB:-2048} files_mib=${FILES_MIB:-1024}
here=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$dir"
trap 'rm -rf "$dir/store" "$dir/target.img" "$dir/pc.zst" "$dir/plain.zst"' EXIT
disk=$dir/disk.img
stamp="$disk_mib $deleted_mib $files_mib"
if [ ! -f "$disk" ] || [ "$(cat "$dir/disk.params" 2>/dev/null)" != "$stamp" ]; then
  echo "bench: making the disk (${disk_mib} MiB, ${files_mib} MiB of files over ${deleted_mib} MiB deleted)" >&2
  files=$("$here/make-disk.sh" "$disk" "$disk_mib" "$deleted_mib" "$files_mib")
  echo "$stamp" > "$dir/disk.params"
  echo "$files" > "$dir/disk.files"
fi
files=$(cat "$dir/disk.files")

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# timed LABEL CMD...: runs CMD after dropping caches, records seconds.
declare -A best
timed() {
  local label=$1; shift
  drop
  local t0 t1
  t0=$(now); "$@" >/dev/null; t1=$(now)
  local s; s=$(echo "$t1 - $t0" | bc -l)
  printf 'bench: %-22s %6.2f s\n' "$label" "$s" >&2
  if [ -z "${best[$label]:-}" ] || (( $(echo "$s < ${best[$label]}" | bc -l) )); then best[$label]=$s; fi
}

ours_capture() {
  rm -rf "$dir/store"
  SHOAL_DATA_DIR=$dir/store "$shoal" -q image capture "$disk" --name bench
}
ours_deploy() {
  rm -f "$dir/target.img"
  SHOAL_DATA_DIR=$dir/store "$shoal" -q image deploy bench "$dir/target.img"
}
pc_capture() {
  partclone.ext4 -q -c -s "$disk" -o - 2>/dev/null | zstd -q -3 -T0 -f -o "$dir/pc.zst"
  sync "$dir/pc.zst"
}
pc_restore() {
  rm -f "$dir/target.img"; truncate -s "${disk_mib}M" "$dir/target.img"
  zstd -q -d -c "$dir/pc.zst" | partclone.ext4 -q -r -s - --overwrite "$dir/target.img" 2>/dev/null
  sync "$dir/target.img"
}
plain_zstd() {
  zstd -q -3 -T0 -f "$disk" -o "$dir/plain.zst"
  sync "$dir/plain.zst"
}

for i in $(seq "$runs"); do
  echo "bench: run $i of $runs" >&2
  timed "shoal capture" ours_capture
  timed "partclone+zstd capture" pc_capture
  timed "shoal deploy" ours_deploy
  e2fsck -fn "$dir/target.img" >/dev/null
  timed "zstd+partclone restore" pc_restore
  e2fsck -fn "$dir/target.img" >/dev/null
done
timed "plain zstd -3 of disk" plain_zstd

ours_size=$(du -sb "$dir/store/chunks" | cut -f1)
pc_size=$(stat -c %s "$dir/pc.zst")
plain_size=$(stat -c %s "$dir/plain.zst")
mib() { echo "scale=1; $1 / 1048576" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

echo
echo "Disk: ${disk_mib} MiB ext4, $(mib "$files") MiB of real files over ${deleted_mib} MiB of deleted random data; best of $runs runs, caches dropped, outputs fsynced."
echo
echo "| step | tool | time (s) | image (MiB) | vs partclone |"
echo "|---|---|---:|---:|---:|"
printf '| capture | shoal | %.2f | %s | %sx time, %sx size |\n' "${best[shoal capture]}" "$(mib "$ours_size")" \
  "$(ratio "${best[shoal capture]}" "${best[partclone+zstd capture]}")" "$(ratio "$ours_size" "$pc_size")"
printf '| capture | partclone.ext4 -c \\| zstd -3 -T0 | %.2f | %s | 1 |\n' "${best[partclone+zstd capture]}" "$(mib "$pc_size")"
printf '| capture | zstd -3 -T0 of the whole disk | %.2f | %s | |\n' "${best[plain zstd -3 of disk]}" "$(mib "$plain_size")"
printf '| deploy | shoal | %.2f | | %sx time |\n' "${best[shoal deploy]}" "$(ratio "${best[shoal deploy]}" "${best[zstd+partclone restore]}")"
printf '| deploy | zstd -d \\| partclone.ext4 -r | %.2f | | 1 |\n' "${best[zstd+partclone restore]}"
