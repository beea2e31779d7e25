#!/usr/bin/env bash
# ext4 on the FUSE volume: mkfs.ext4 on MOUNTPOINT/volume, a loop mount of
# it, files written and read back, unmount, fsck.ext4 -n clean; then the
# same file system from the image itself after resyncfs is gone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/lib.sh"
. "$here/resyncfs-lib.sh"
tmpdir_setup
cd "$T"

truncate -s 128M img
mount_resyncfs img mnt
mkfs.ext4 -q -F mnt/volume || fail "mkfs.ext4"
mkdir -p ext
loop=$(losetup --find --show mnt/volume) || fail "losetup"
on_exit "losetup -d $loop 2>/dev/null"
mount "$loop" ext || fail "mount ext4"
on_exit "mountpoint -q '$T/ext' && umount '$T/ext'"
head -c 20M /dev/urandom >data
for i in 1 2 3; do cp data "ext/file$i"; done
mkdir ext/dir && seq 100000 >ext/dir/numbers
sync
umount ext
mount "$loop" ext || fail "remount ext4"
for i in 1 2 3; do cmp data "ext/file$i" || fail "file$i differs"; done
seq 100000 | cmp - ext/dir/numbers || fail "numbers differ"
umount ext
fsck.ext4 -n -f "$loop" >fsck.txt 2>&1 || { cat fsck.txt; fail "fsck.ext4 -n on the loop device"; }
losetup -d "$loop"
unmount_resyncfs mnt
fsck.ext4 -n -f img >fsck2.txt 2>&1 || { cat fsck2.txt; fail "fsck.ext4 -n on the image"; }
echo ok
