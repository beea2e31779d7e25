#!/usr/bin/env bash
# fio through the mount: random read/write with several jobs, every block
# verified (crc32c); then a sequential write and read of the whole volume.
# The image after unmount holds what fio verified through the mount.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/lib.sh"
. "$here/resyncfs-lib.sh"
tmpdir_setup
cd "$T"

truncate -s 128M img
mount_resyncfs img mnt
size=$([ "${RESYNC_LONG:-0}" = 1 ] && echo 128M || echo 32M)
# Four jobs, each on its own quarter of the volume, mixed random I/O of
# mixed sizes, verified after writing and while running.
fio --name=randrw --filename=mnt/volume --rw=randrw --bsrange=4k-256k --size="$size" \
	--offset_increment=32M --numjobs=4 --ioengine=psync --iodepth=1 \
	--verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting \
	--output=fio-randrw.txt || { cat fio-randrw.txt; fail "fio randrw verify"; }
grep -q "err= 0" fio-randrw.txt || { cat fio-randrw.txt; fail "fio reported errors"; }
fio --name=seq --filename=mnt/volume --rw=write --bs=1M --size=128M --ioengine=psync \
	--verify=crc32c --verify_fatal=1 --output=fio-seq.txt ||
	{ cat fio-seq.txt; fail "fio sequential verify"; }
cp --sparse=never mnt/volume through-mount
unmount_resyncfs mnt
cmp through-mount img || fail "image differs from what the mount served"
"$RESYNCCTL" info --volume img --json | python3 -c '
import json, sys
i = json.load(sys.stdin)
assert i["clean"] is True, i
assert i["dirty_ranges"] == [[0, 128 << 20]], i["dirty_ranges"]
' || fail "dirty ranges after fio"
echo ok
