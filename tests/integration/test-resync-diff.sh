#!/usr/bin/env bash
# resync-diff sync|compare from the command line:
#  - exit codes as cmp: 0 identical, 1 different (compare), 2 on any error;
#  - --json prints one document with the counts, and they are right;
#  - sync makes DST byte-identical (DST differing, longer, shorter, missing,
#    empty), a second sync writes nothing, --dry-run writes nothing;
#  - every error (missing or unreadable file, a directory, the same file by
#    name, hard link or symlink, a bad block size, a full disk, an I/O error,
#    a DST locked by another writer) exits 2 with exactly one line on stderr
#    and leaves the files as they were (or says how far it got).
# Usage: test-resync-diff.sh RESYNC_DIFF [RESYNC_TEST_MKIMG]
set -euo pipefail
RD=$(realpath "${1:?usage: test-resync-diff.sh RESYNC_DIFF [RESYNC_TEST_MKIMG]}")
[ -n "${2:-}" ] && RESYNC_MKIMG=$(realpath "$2") && export RESYNC_MKIMG
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/lib.sh"
tmpdir_setup
cd "$T"
unset RESYNC_IO RESYNC_FAULT

# run RC CMD...: run CMD, stdout to out, stderr to err; its exit code must be RC.
run() {
	local want=$1 rc=0
	shift
	"$@" >out 2>err || rc=$?
	if [ "$rc" != "$want" ]; then
		echo "--- stdout" >&2
		cat out >&2
		echo "--- stderr" >&2
		cat err >&2
		fail "'$*' exited $rc, want $want"
	fi
}

# fails CMD...: an error: exit 2, nothing on stdout, one line on stderr
# naming the tool.
fails() {
	run 2 "$@"
	[ -s out ] && fail "'$*' printed on stdout: $(cat out)"
	[ "$(wc -l <err)" = 1 ] || fail "'$*' wrote $(wc -l <err) lines on stderr: $(cat err)"
	grep -q '^resync-diff: ' err || fail "'$*': stderr does not name the tool: $(cat err)"
}

# err_has TEXT: the last command's stderr contains TEXT.
err_has() {
	grep -qF -- "$1" err || fail "stderr lacks '$1': $(cat err)"
}

# json_load: parse the last command's stdout, which must be exactly one JSON
# object, into J[field] (lists and booleans in JSON form). Also checks that
# "seconds" is a plausible duration.
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
declare -A J
json_load() {
	local k v
	J=()
	while IFS=$'\t' read -r k v; do
		J[$k]=$v
	done < <("$PY" -c '
import json
doc = json.load(open("out"))
s = doc.get("seconds", 0)
assert isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s < 60, s
for k, v in doc.items():
    print(k, json.dumps(v) if isinstance(v, (list, dict, bool)) else v, sep="\t")
' || echo "_error	1")
	[ -z "${J[_error]:-}" ] || fail "stdout is not one JSON object: $(cat out)"
}

# jwant FIELD VALUE: the loaded document's FIELD is VALUE.
jwant() {
	[ "${J[$1]:-<missing>}" = "$2" ] || fail "JSON field $1 is '${J[$1]:-<missing>}', want '$2'"
}

same() {
	cmp -s "$1" "$2" || fail "$1 and $2 differ"
}

sum() {
	sha256sum "$1" | cut -d' ' -f1
}

# --- compare: exit codes and ranges ----------------------------------------
mkimg fill a 1M 1
cp a b
run 0 "$RD" compare a b
[ -s out ] && fail "identical files listed ranges: $(cat out)"
err_has "identical"
mkimg scribble b 70000 10 2
run 1 "$RD" compare a b
[ "$(cat out)" = "65536 65536" ] || fail "compare listed '$(cat out)'"
run 1 "$RD" compare --block-size 4K a b
[ "$(cat out)" = "69632 4096" ] || fail "compare -b 4K listed '$(cat out)'"
mkimg scribble b 1048000 576 3 # the last page, to the end
run 1 "$RD" compare -b 4K a b
[ "$(cat out)" = "$(printf '69632 4096\n1044480 4096')" ] || fail "compare listed '$(cat out)'"
run 1 "$RD" compare --hash -b 4K a b
[ "$(cat out)" = "$(printf '69632 4096\n1044480 4096')" ] || fail "compare --hash listed '$(cat out)'"
# sizes differ: everything past the shorter end differs
head -c 500000 a >short
run 1 "$RD" compare a short
[ "$(cat out)" = "458752 589824" ] || fail "compare a short listed '$(cat out)'"
err_has "sizes differ"
# (block-granular from A's side: A's short last block matches)
run 1 "$RD" compare short a
[ "$(cat out)" = "500000 548576" ] || fail "compare short a listed '$(cat out)'"
: >empty
: >empty2
run 0 "$RD" compare empty empty2
run 1 "$RD" compare empty a
[ "$(cat out)" = "0 1048576" ] || fail "compare empty a listed '$(cat out)'"

# compare --json
run 1 "$RD" compare --json -b 4K a b
json_load
[ "$(wc -l <out)" = 1 ] || fail "--json printed more than one line"
jwant bytes_compared 1048576
jwant blocks_differing 2
jwant identical false
jwant ranges "[[69632, 4096], [1044480, 4096]]"
[ -n "${J[seconds]:-}" ] || fail "no seconds"
[ -s err ] && fail "--json wrote on stderr: $(cat err)"
cp a a2
run 0 "$RD" compare --json a a2
json_load
jwant identical true
jwant blocks_differing 0
jwant ranges "[]"

# compare writes nothing
s=$(sum b)
run 1 "$RD" compare a b
[ "$(sum b)" = "$s" ] || fail "compare changed b"

# --- sync ---------------------------------------------------------------
# b differs in two 4K pages of two 64K blocks
run 0 "$RD" sync --json a b
json_load
[ "$(wc -l <out)" = 1 ] || fail "--json printed more than one line"
jwant bytes_compared 1048576
jwant blocks_differing 2
jwant bytes_written 8192
jwant dry_run false
[ -n "${J[seconds]:-}" ] || fail "no seconds"
same a b
# nothing left to do
run 0 "$RD" sync --json a b
json_load
jwant blocks_differing 0
jwant bytes_written 0
run 0 "$RD" compare a b

# DST longer, shorter, missing, empty; odd sizes; --hash; every block size
mkimg pair s1 d1 3000001 3500000 20 40000 4
run 0 "$RD" sync s1 d1
same s1 d1
mkimg pair s2 d2 3000001 1000 5 400 5
run 0 "$RD" sync --hash -b 4K s2 d2
same s2 d2
run 0 "$RD" sync s2 missing
same s2 missing
: >e
run 0 "$RD" sync --json s2 e
json_load
jwant bytes_written 3000001
same s2 e
: >nothing
run 0 "$RD" sync nothing e
[ ! -s e ] || fail "sync of an empty file left $(stat -c %s e) bytes"
for bs in 4K 8K 16K 32K 64K 128K 256K 512K 1M; do
	mkimg pair sb db 2100000 2100000 10 30000 6
	run 0 "$RD" sync -b $bs --threads 2 sb db
	same sb db
done

# --- dry run --------------------------------------------------------------
mkimg pair s3 d3 2M 1500000 10 20000 7
s=$(sum d3)
run 0 "$RD" sync --dry-run --json s3 d3
json_load
jwant dry_run true
[ "${J[blocks_differing]}" -gt 0 ] || fail "dry run found nothing to do"
[ "${J[bytes_written]}" -gt 0 ] || fail "dry run would write nothing"
[ "$(sum d3)" = "$s" ] || fail "--dry-run changed the destination"
[ "$(stat -c %s d3)" = 1500000 ] || fail "--dry-run resized the destination"
run 0 "$RD" sync -n s3 not-there
[ ! -e not-there ] || fail "--dry-run created a missing destination"
run 0 "$RD" sync s3 d3
same s3 d3

# --- errors: one line, exit 2, files untouched ---------------------------------
mkimg fill src 256K 8
mkimg fill dst 256K 9
s=$(sum dst)

fails "$RD" sync no-such-src dst
err_has "no-such-src"
err_has "No such file or directory"
fails "$RD" sync no-such-src new-dst
[ ! -e new-dst ] || fail "a failed sync created its destination"
fails "$RD" compare src no-such-file
fails "$RD" compare no-such-file src

mkdir adir
fails "$RD" sync src adir
err_has "adir"
fails "$RD" sync adir dst
fails "$RD" compare src adir
fails "$RD" sync src .
# other non-files, a FIFO among them: refused at once, not waited on
mkfifo fifo
fails timeout 10 "$RD" compare fifo src
err_has "neither a regular file nor a block device"
fails timeout 10 "$RD" sync fifo dst
fails timeout 10 "$RD" sync src fifo
fails "$RD" compare /dev/null src

# the same file, by name, hard link and symlink, either way round
ln src hardlink
ln -s src symlink
ln -s "$T/dst" abs-symlink
for pair in "src src" "src ./src" "src hardlink" "hardlink src" "src symlink" "symlink src" \
	"dst abs-symlink"; do
	# shellcheck disable=SC2086
	fails "$RD" sync $pair
	err_has "same file"
	# shellcheck disable=SC2086
	fails "$RD" compare $pair
done
[ "$(sum dst)" = "$s" ] || fail "a refused sync changed dst"

for bs in 0 1 3K 4095 4097 12K 2M 1G abc -4K 64KX ""; do
	fails "$RD" sync -b "$bs" src dst
	err_has "block size"
	fails "$RD" compare --block-size="$bs" src dst
done
[ "$(sum dst)" = "$s" ] || fail "a refused sync changed dst"

# unreadable and unwritable files, as an unprivileged user (root reads all)
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
chmod 755 "$T"
mkdir -m 777 priv
cp src priv/secret && chmod 000 priv/secret
cp dst priv/ro && chmod 444 priv/ro
cp src priv/ok && chmod 644 priv/ok
check "setpriv works" nobody true
fails nobody "$RD" sync priv/secret priv/new
err_has "Permission denied"
[ ! -e priv/new ] || fail "a failed sync created its destination"
fails nobody "$RD" compare priv/secret priv/ok
err_has "Permission denied"
fails nobody "$RD" compare priv/ok priv/secret
fails nobody "$RD" sync priv/ok priv/secret
fails nobody "$RD" sync priv/ok priv/ro
err_has "Permission denied"
cmp -s dst priv/ro || fail "a refused sync changed a read-only file"
run 1 nobody "$RD" compare priv/ok priv/ro

# a second writer is refused while another holds the lock (flock LOCK_EX)
cp dst locked
(
	exec 9<>locked
	flock -x 9
	: >lock-held
	exec sleep 60
) &
holder=$!
on_exit "kill $holder 2>/dev/null; wait $holder 2>/dev/null"
check "the lock holder started" wait_for 10 test -e lock-held
fails "$RD" sync src locked
err_has "in use by another writer"
cmp -s dst locked || fail "a refused sync changed a locked file"
# readers and dry runs take no lock
run 1 "$RD" compare src locked
run 0 "$RD" sync --dry-run src locked
kill "$holder"
wait "$holder" 2>/dev/null || true
run 0 "$RD" sync src locked
same src locked

# an I/O error from the fault backend: the message says how far it got. One
# changed page in each 8 MiB work unit; the 2nd write (unit 1's) fails.
mkimg fill fs 20M 10
cp fs fd
for off in 102400 8491008 16879616; do
	mkimg scribble fd $off 4096 $off
done
cp fd fd-before
RESYNC_IO=fault RESYNC_FAULT=op=write,nth=2,errno=EIO fails "$RD" sync --threads 1 fs fd
err_has "writing the destination"
err_has "Input/output error"
err_has "the first 8388608 bytes are in sync, 4096 bytes were written"
cmp -s -n 8388608 fs fd || fail "the part reported in sync is not"
cmp -s -i 8388608 fd fd-before || fail "the part past the failure changed"
# with both threads the numbers vary; the form does not
cp fd-before fd
RESYNC_IO=fault RESYNC_FAULT=op=write,nth=2,errno=EIO fails "$RD" sync fs fd
grep -qE 'the first [0-9]+ bytes are in sync, [0-9]+ bytes were written$' err ||
	fail "no progress in: $(cat err)"
n=$(sed -E 's/.*the first ([0-9]+) bytes.*/\1/' err)
cmp -s -n "$n" fs fd || fail "the $n bytes reported in sync are not"
RESYNC_IO=fault RESYNC_FAULT=op=read,nth=3,errno=EIO fails "$RD" compare fs fd
err_has "Input/output error"
RESYNC_IO=fault RESYNC_FAULT=op=fsync,nth=1,errno=EIO fails "$RD" sync fs fd
err_has "flushing the destination"
RESYNC_IO=fault RESYNC_FAULT=op=bogus fails "$RD" sync fs fd
run 0 "$RD" sync fs fd
same fs fd

# a full disk: a 4 MiB tmpfs and an 8 MiB source
mkdir full
mount -t tmpfs -o size=4m resync-test-full full ||
	fail "cannot mount a tmpfs (the test runs as root)"
on_exit "umount '$T/full'"
mkimg fill big 8M 11
fails "$RD" sync big full/img
err_has "No space left on device"
err_has "bytes are in sync"
rm -f full/img
# a dry run needs no space
run 0 "$RD" sync --dry-run big full/img
[ ! -e full/img ] || fail "--dry-run created a destination"
# what fits, fits
mkimg fill small 1M 12
run 0 "$RD" sync small full/img
same small full/img

# DST a block device (a loop device): the same size syncs, another is refused
if [ -e /dev/loop-control ]; then
	mkimg fill lo.img 1M 13
	loopdev=$(losetup -f --show lo.img) || fail "cannot set up a loop device"
	on_exit "losetup -d $loopdev"
	mkimg fill s2m 2M 14
	fails "$RD" sync s2m "$loopdev"
	err_has "sizes must match"
	mkimg fill s1m 1M 15
	mkimg scribble s1m 300000 200000 16
	run 0 "$RD" sync s1m "$loopdev"
	same s1m "$loopdev"
	run 0 "$RD" compare "$loopdev" s1m
	run 0 "$RD" sync "$loopdev" from-dev
	same s1m from-dev
	fails "$RD" sync "$loopdev" "$loopdev"
	err_has "same file"
else
	echo "no loop devices here: block device destinations not tested" >&2
fi

# --- usage --------------------------------------------------------------------
run 0 "$RD" --help
grep -q sync out || fail "--help does not list sync"
run 0 "$RD" sync --help
grep -q -- --dry-run out || fail "sync --help does not show --dry-run"
run 2 "$RD"
run 2 "$RD" sync src
run 2 "$RD" sync src dst extra
run 2 "$RD" compare --dry-run src dst
run 2 "$RD" no-such-command
fails "$RD" sync --threads 0 src dst
fails "$RD" sync --threads 17 src dst
[ "$(sum dst)" = "$s" ] || fail "a usage error changed dst"

echo "test-resync-diff: all passed"
