#!/usr/bin/env bash
# resync-diff's own signature/delta code and in-place patch against rdiff:
#  - random files from 0 bytes to 64 MiB, changed by inserts, deletes,
#    overwrites, moves and swaps (copies that overlap their own output and
#    form cycles); every combination of {rdiff, resync-diff} for the
#    signature, the delta and the patch, plus resync-diff patch --inplace,
#    reproduces NEW byte for byte; signatures are byte-identical to rdiff's;
#    resync-diff's delta is never larger than rdiff's, and the same when its
#    search is split into 13 ranges joined at their boundaries;
#  - a NEW that shrinks while the delta reads it fails with a clear
#    message and leaves no delta;
#  - --inplace refuses, before any write, a delta that copies past the end
#    of its basis, a corrupt or truncated delta, and a basis whose earlier
#    in-place patch was interrupted (killed by a failpoint after its first
#    write): the next run says so and leaves everything as it was.
set -euo pipefail
. "$RESYNC_SOURCE/tests/lib/lib.sh"
tmpdir_setup

R=${RESYNC_DIFF:-$RESYNC_BUILD/tools/resync-diff}
M="python3 $RESYNC_SOURCE/tests/integration/mutate.py"
command -v rdiff >/dev/null || fail "rdiff is not installed (tools/deps lists it)"
cd "$T"

sig() { # TOOL BASIS SIG [OPTS]
	local tool=$1 b=$2 s=$3
	shift 3
	if [ "$tool" = rdiff ]; then rdiff "$@" signature "$b" "$s"; else "$R" signature "$@" "$b" "$s"; fi
}

one_case() { # SEED SIZE [SIG OPTS] -- [KINDS]
	local seed=$1 size=$2 opts=() kinds=()
	shift 2
	while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	kinds=("$@")
	rm -f B N S.* D.* O.*
	$M "$seed" "$size" B N "${kinds[@]}"
	sig rdiff B S.rdiff "${opts[@]}"
	sig resync B S.resync "${opts[@]}"
	cmp -s S.rdiff S.resync || fail "signature of $size bytes (${opts[*]}) differs from rdiff's"
	for s in rdiff resync; do
		for d in rdiff resync; do
			if [ $d = rdiff ]; then rdiff delta S.$s N D.$s.$d; else "$R" delta S.$s N D.$s.$d; fi
		done
		[ "$(stat -c %s D.$s.resync)" -le "$(stat -c %s D.$s.rdiff)" ] ||
			fail "delta of $size bytes (${kinds[*]}) larger than rdiff's"
		# the search split in many ranges joins into the same delta
		RESYNC_RDELTA_RANGES=13 "$R" delta -f S.$s N D.ranges
		cmp -s D.ranges D.$s.resync || fail "delta of $size bytes in 13 ranges differs"
		for d in rdiff resync; do
			rdiff patch B D.$s.$d O.r
			cmp -s O.r N || fail "rdiff patch of a $d delta ($size bytes, ${kinds[*]}) is not NEW"
			"$R" patch B D.$s.$d O.x
			cmp -s O.x N || fail "resync-diff patch of a $d delta ($size bytes, ${kinds[*]}) is not NEW"
			cp B O.i
			"$R" patch --inplace O.i D.$s.$d
			cmp -s O.i N || fail "--inplace of a $d delta ($size bytes, ${kinds[*]}) is not NEW"
			[ ! -e O.i.resync-inplace ] || fail "--inplace left its journal behind"
			rm -f O.r O.x O.i
		done
	done
}

# --- interoperation ----------------------------------------------------------
one_case 1 0
one_case 2 1 -- insert
one_case 3 1000 -b 64 -- swap
one_case 4 4095 -b 128 -- move overwrite
one_case 5 100000 -b 512 -- insert delete overwrite move swap
one_case 6 100000 -H md4 -b 256 -- move move move
one_case 7 300000 -R rollsum -b 1024 -- delete swap insert
one_case 8 3000000 -- insert delete overwrite move
one_case 9 $((5 * 1024 * 1024 + 3)) -b 4096 -- swap move
one_case 10 $((64 * 1024 * 1024)) -- insert delete overwrite move

# --- --inplace refusals ------------------------------------------------------
$M 11 200000 B N move swap
rdiff signature -b 512 B S
"$R" delta S N D
# a delta for a longer basis: refused before any write
head -c 150000 B >short
cp short short.orig
rc=0
"$R" patch --inplace short D 2>err || rc=$?
[ $rc = 103 ] || fail "--inplace of a delta past the basis' end: exit $rc, not 103"
grep -q "past the end" err || fail "--inplace past the end: no clear message: $(cat err)"
cmp -s short short.orig || fail "--inplace changed a basis it refused"
# a truncated and a corrupt delta
head -c $(($(stat -c %s D) - 1)) D >D.trunc
cp B B.orig
rc=0
"$R" patch --inplace B D.trunc 2>err || rc=$?
[ $rc = 103 ] || fail "--inplace of a truncated delta: exit $rc, not 103"
cmp -s B B.orig || fail "--inplace changed the basis for a truncated delta"
printf 'rs\x026\x99' >D.bad
rc=0
"$R" patch --inplace B D.bad 2>err || rc=$?
[ $rc = 106 ] || fail "--inplace of a corrupt delta: exit $rc, not 106"
cmp -s B B.orig || fail "--inplace changed the basis for a corrupt delta"
# a basis another writer holds (its flock, as resyncfs takes it)
rc=0
flock -x B -c "\"$R\" patch --inplace B D" 2>err || rc=$?
[ $rc = 100 ] || fail "--inplace of a locked basis: exit $rc, not 100"
grep -q "in use" err || fail "--inplace of a locked basis: no clear message: $(cat err)"
cmp -s B B.orig || fail "--inplace changed a locked basis"
# --inplace belongs to patch; patch --inplace takes no NEWFILE
rc=0
"$R" delta --inplace S N D.x 2>err || rc=$?
[ $rc = 101 ] || fail "delta --inplace: exit $rc, not 101"
rc=0
"$R" patch --inplace B D N.x 2>err || rc=$?
[ $rc = 101 ] || fail "patch --inplace with a NEWFILE: exit $rc, not 101"
cmp -s B B.orig || fail "a refused patch --inplace changed the basis"
# the delta from a pipe works too
"$R" patch --inplace B - <D
cmp -s B N || fail "--inplace with the delta on standard input is not NEW"

# --- an interrupted --inplace is detected ------------------------------------
cp B.orig B
rc=0
RESYNC_FAILPOINT=rdelta-inplace-kill "$R" patch --inplace B D 2>/dev/null || rc=$?
[ $rc = 137 ] || fail "the failpoint did not kill the in-place patch (exit $rc)"
[ -e B.resync-inplace ] || fail "no journal after an interrupted in-place patch"
grep -q "phase=rewriting" B.resync-inplace || fail "the journal does not say what was going on"
cp B B.partial
rc=0
"$R" patch --inplace B D 2>err || rc=$?
[ $rc = 100 ] || fail "a patch over an interrupted one: exit $rc, not 100"
grep -q "was interrupted" err || fail "no word of the interruption: $(cat err)"
cmp -s B B.partial || fail "the run after an interrupted one wrote to the basis"
# what the message says to do works
cp B.orig B
rm B.resync-inplace
"$R" patch --inplace B D
cmp -s B N || fail "--inplace after recovery is not NEW"
# --- NEW shrinking while the delta reads it ----------------------------------
# (the search maps NEW; a failpoint truncates it to half right after)
cp N N.shrink
rc=0
RESYNC_FAILPOINT=rdelta-delta-shrink "$R" delta S N.shrink D.shrink 2>err || rc=$?
[ $rc = 100 ] || fail "delta of a NEW that shrank: exit $rc, not 100"
grep -q "'N.shrink' shrank while the delta read it" err || fail "shrunk NEW: no clear message: $(cat err)"
[ ! -e D.shrink ] || fail "delta of a NEW that shrank left a delta behind"
echo "rdelta-interop: ok"
