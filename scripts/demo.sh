#!/bin/bash
# demo.sh SHOAL_BINARY
#
# The main job on the embedded defaults, offline: make an ext4 disk of
# real files over deleted data, capture it into a store, deploy it to a
# second file, verify the copy and say what happened.
set -euo pipefail
shoal=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
work=${DEMO_DIR:-/var/tmp/shoal-demo}
rm -rf "$work"
mkdir -p "$work"
export SHOAL_DATA_DIR=$work/store
say() { printf '\n== %s\n' "$*"; }
trap 'rm -f "$work/disk.img" "$work/copy.img"' EXIT

say "making a 1 GiB ext4 disk: ~200 MiB of real files over 600 MiB of deleted random data"
files=$("$here/make-disk.sh" "$work/disk.img" 1024 600 200)
printf 'disk.img: %s MiB of files\n' $((files / 1048576))

say "shoal image capture disk.img --name demo"
"$shoal" image capture "$work/disk.img" --name demo --description "make demo"

say "shoal image list"
"$shoal" image list

say "shoal image deploy demo copy.img"
"$shoal" image deploy demo "$work/copy.img"

say "shoal image verify demo --target copy.img"
"$shoal" image verify demo --target "$work/copy.img"

say "e2fsck -fn copy.img"
e2fsck -fn "$work/copy.img" 2>&1 | tail -1

say "comparing every file"
mkdir -p "$work/a" "$work/b"
mount -o ro,loop "$work/disk.img" "$work/a"
mount -o ro,loop "$work/copy.img" "$work/b" || { umount "$work/a"; exit 1; }
status=0
diff -r --no-dereference "$work/a" "$work/b" >/dev/null || status=$?
count=$(find "$work/b" -type f | wc -l)
umount "$work/a" "$work/b"
if [ "$status" -ne 0 ]; then
  echo "the deployed files differ from the source" >&2
  exit 1
fi
echo "all $count files identical"

stored=$(du -sb "$work/store/chunks" | cut -f1)
say "done"
printf 'a 1024 MiB disk became a %s MiB image (%s MiB of files; the deleted data was never read)\n' \
  $((stored / 1048576)) $((files / 1048576))
printf 'the store is %s (SHOAL_DATA_DIR); try: SHOAL_DATA_DIR=%s %s image info demo\n' "$work/store" "$work/store" "$shoal"
