#!/bin/sh
# make-disk.sh DISK SIZE_MIB DELETED_MIB FILES_MIB
#
# Makes an ext4 disk image the way operators' disks look: real files (from
# /usr/share, then /usr/lib) written over DELETED_MIB of random data left
# by files that were deleted. Used by the demo and the benchmarks.
set -eu
disk=$1 size=$2 deleted=$3 files=$4
work=$(mktemp -d "${TMPDIR:-/var/tmp}/shoal-disk.XXXXXX")
trap 'rm -rf "$work"' EXIT

rm -f "$disk"
head -c "${deleted}M" /dev/urandom > "$disk"
truncate -s "${size}M" "$disk"

# Copy real files until about FILES_MIB, keeping their directory layout.
budget=$((files * 1024 * 1024))
mkdir -p "$work/root"
for src in /usr/share /usr/lib; do
  [ "$budget" -gt 0 ] || break
  find "$src" -xdev -type f -size -64M -readable -printf '%s %p\n' 2>/dev/null | sort -k2 |
  while read -r bytes path; do
    [ "$budget" -gt 0 ] || break
    budget=$((budget - bytes))
    echo "$path"
  done > "$work/list"
  # cpio -p keeps paths under root; errors on odd files are not fatal.
  cpio -pdm --quiet "$work/root" < "$work/list" 2>/dev/null || true
  used=$(du -sb "$work/root" | cut -f1)
  budget=$((files * 1024 * 1024 - used))
done

mkfs.ext4 -q -F -E nodiscard -L shoal-demo -d "$work/root" "$disk"
du -sb "$work/root" | cut -f1
