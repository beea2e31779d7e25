# Shell helpers for the resyncfs tests (on top of tests/lib/lib.sh):
# mount_resyncfs IMAGE MNT [OPTIONS] starts resyncfs -f in the background
# (pid in RESYNCFS_PID), waits for the mount in /proc/self/mountinfo, and
# registers an unmount for every exit path; unmount_resyncfs MNT unmounts
# cleanly and checks resyncfs's exit code.
RESYNCFS=${RESYNCFS:-$RESYNC_BUILD/tools/resyncfs}
RESYNCCTL=${RESYNCCTL:-$RESYNC_BUILD/tools/resyncctl}

is_mounted() {
	awk -v p="$(realpath "$1")" '$5 == p {found = 1} END {exit !found}' /proc/self/mountinfo
}

mount_resyncfs() {
	local img=$1 mnt=$2 opts=${3:-}
	mkdir -p "$mnt"
	if [ -n "$opts" ]; then
		"$RESYNCFS" "$img" "$mnt" -f -o "$opts" &
	else
		"$RESYNCFS" "$img" "$mnt" -f &
	fi
	RESYNCFS_PID=$!
	on_exit "is_mounted '$mnt' && umount -l '$mnt'; kill -9 $RESYNCFS_PID 2>/dev/null"
	wait_for 20 is_mounted "$mnt" || fail "resyncfs did not mount $mnt"
}

unmount_resyncfs() {
	fusermount3 -u "$1" || fail "fusermount3 -u $1"
	wait "$RESYNCFS_PID" || fail "resyncfs exited $?"
}
