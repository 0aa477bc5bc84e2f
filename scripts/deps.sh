#!/bin/sh
# Installs the Debian packages Shoal builds, tests, demos and benchmarks
# with. Idempotent: does nothing when everything is there.
set -eu

# package:command-that-proves-it-is-installed
want="
bc:bc
nftables:nft
curl:curl
tftp-hpa:tftp
atftp:atftp
iproute2:ip
cpio:cpio
e2fsprogs:mkfs.ext4
fdisk:sfdisk
gdisk:sgdisk
util-linux:losetup
qemu-utils:qemu-img
zstd:zstd
partclone:partclone.ext4
fuse3:fusermount3
python3-fusepy:
python3:python3
dosfstools:mkfs.vfat
qemu-system-x86:qemu-system-x86_64
ipxe-qemu:
ipxe:
ovmf:
seabios:
linux-image-cloud-amd64:
dnsmasq-base:dnsmasq
tftpd-hpa:in.tftpd
kea-admin:perfdhcp
udpcast:udp-sender
busybox-static:
kmod:modprobe
grub-pc-bin:
extlinux:extlinux
sqlite3:sqlite3
ipmitool:ipmitool
openipmi:ipmi_sim
syslinux-common:
cloud-init:cloud-init
openssh-client:ssh-keygen
"

find_missing() {
  missing=""
  for entry in $want; do
    pkg=${entry%%:*}
    cmd=${entry#*:}
    if [ -n "$cmd" ]; then
      command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing="$missing $pkg"
    else
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $pkg"
    fi
  done
}

find_missing
if [ -z "$missing" ]; then
  exit 0
fi
echo "deps: installing$missing"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: need root to install$missing (run 'sudo make deps')" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Packages such as tftpd-hpa ship a daemon: keep apt from starting it, the
# tests and benchmarks start their own copies inside namespaces.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  own_policy=1
fi
trap 'if [ -n "$own_policy" ]; then rm -f "$policy"; fi' EXIT
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian's qemu-system-x86 replaces a newer qemu-utils from backports when
# the versions disagree; a second pass puts back whatever the first removed.
find_missing
if [ -n "$missing" ]; then
  echo "deps: installing$missing"
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
find_missing
if [ -n "$missing" ]; then
  echo "deps: still missing$missing" >&2
  exit 1
fi
