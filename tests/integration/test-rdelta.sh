#!/usr/bin/env bash
# resync-diff signature|delta|patch against librsync's rdiff:
#  - signatures are byte-identical to rdiff's for the same options, for
#    files of 0, 1, odd and a few MiB, from a file and from a pipe;
#  - deltas made by either tool patch correctly with either tool, and the
#    result equals the new file byte for byte (shifted, inserted, deleted,
#    overwritten content; unrelated files; empty files);
#  - bad input (truncated or garbage signature or delta, wrong basis,
#    missing files, existing output, bad options, a full disk) fails with one
#    line on stderr, rdiff's exit code, and no output file left behind.
# RESYNC_LONG=1 adds a 64 MiB file.
set -euo pipefail
. "$RESYNC_SOURCE/tests/lib/lib.sh"
tmpdir_setup

R=${RESYNC_DIFF:-$RESYNC_BUILD/tools/resync-diff}
command -v rdiff >/dev/null || fail "rdiff is not installed (tools/deps lists it)"
cd "$T"

# --- test data -------------------------------------------------------------
# basis files B_<name>, new versions N_<name>
mkimg fill B_empty 0 1
: >N_empty
mkimg fill B_one 1 2
mkimg fill N_one 1 3
mkimg fill B_odd 12345 4
# the odd file with 3 bytes inserted near the front and its tail rewritten
{ head -c 100 B_odd; printf 'abc'; tail -c +101 B_odd; } >N_odd
mkimg scribble N_odd 9000 500 5

big=$((3 * 1024 * 1024 + 4321))
[ "${RESYNC_LONG:-0}" = 1 ] && big=$((64 * 1024 * 1024 + 77))
mkimg fill B_big $big 6
# new: 1000 bytes inserted at 1 MiB (everything after shifts), 777 bytes
# deleted at 2 MiB, a few overwritten ranges, and 5000 bytes appended
mkimg fill ins 1000 7
mkimg fill app 5000 8
{
	dd if=B_big bs=1M count=1 status=none
	cat ins
	dd if=B_big bs=1M skip=1 count=1 status=none
	dd if=B_big bs=1M skip=$((2 * 1024 * 1024 + 777)) iflag=skip_bytes status=none
	cat app
} >N_big
mkimg scribble N_big 50000 3000 9
mkimg scribble N_big $((big / 2 + 12345)) 10000 10
mkimg scribble N_big $((big - 60000)) 1 11
# an unrelated new file against the big basis, and the big file against an
# empty basis
mkimg fill N_other 300001 12
cp B_empty B_none
cp N_big N_none
cp B_big B_other

names="empty one odd big other none"

# --- signatures are identical to rdiff's ---------------------------------------
optsets=(
	""
	"-b 1024"
	"-b 333 -S 8"
	"-S -1"
	"-H md4"
	"-R rollsum"
	"-H md4 -R rollsum -b 512 -S 16"
	"--hash=blake2 --rollsum=rabinkarp --block-size=0 --sum-size=0"
)
nsig=0
for n in $names; do
	for i in "${!optsets[@]}"; do
		o=${optsets[$i]}
		# shellcheck disable=SC2086
		rdiff $o signature "B_$n" "r.sig.$n.$i" || fail "rdiff signature $o $n"
		# shellcheck disable=SC2086
		"$R" signature $o "B_$n" "s.sig.$n.$i" || fail "resync-diff signature $o $n"
		cmp -s "r.sig.$n.$i" "s.sig.$n.$i" || fail "signature of $n with '$o' differs from rdiff's"
		nsig=$((nsig + 1))
	done
	# from a pipe (size unknown: rdiff's defaults for unknown sizes)
	cat "B_$n" | rdiff signature >"r.psig.$n"
	cat "B_$n" | "$R" signature - - >"s.psig.$n"
	cmp -s "r.psig.$n" "s.psig.$n" || fail "piped signature of $n differs from rdiff's"
	# from standard input redirected from the file (size known)
	"$R" signature <"B_$n" >"s.isig.$n"
	cmp -s "r.sig.$n.0" "s.isig.$n" || fail "signature of $n from stdin differs from rdiff's"
done
echo "ok: $nsig signatures byte-identical to rdiff's"

# --- deltas from either tool patch with either tool ---------------------------
for n in $names; do
	for i in 0 2 6; do
		rdiff delta "r.sig.$n.$i" "N_$n" "r.delta.$n.$i"
		"$R" delta "s.sig.$n.$i" "N_$n" "s.delta.$n.$i" || fail "resync-diff delta $n $i"
		"$R" patch "B_$n" "r.delta.$n.$i" "s.new.r.$n.$i" || fail "resync-diff patch of rdiff delta $n $i"
		"$R" patch "B_$n" "s.delta.$n.$i" "s.new.s.$n.$i" || fail "resync-diff patch of own delta $n $i"
		rdiff patch "B_$n" "s.delta.$n.$i" "r.new.s.$n.$i" || fail "rdiff patch of resync-diff delta $n $i"
		for f in "s.new.r.$n.$i" "s.new.s.$n.$i" "r.new.s.$n.$i"; do
			cmp -s "$f" "N_$n" || fail "$f differs from N_$n"
		done
	done
	# through pipes: new file and delta streamed, delta and result streamed
	cat "N_$n" | "$R" delta "s.sig.$n.0" - - | "$R" patch "B_$n" - - >"s.pipe.$n" ||
		fail "piped delta | patch of $n"
	cmp -s "s.pipe.$n" "N_$n" || fail "piped delta | patch of $n differs"
	"$R" delta "s.sig.$n.0" <"N_$n" | "$R" patch "B_$n" >"s.pipe2.$n"
	cmp -s "s.pipe2.$n" "N_$n" || fail "delta | patch with omitted arguments of $n differs"
done
# the delta of a shifted file is small: content after the insert was found
dsize=$(stat -c %s s.delta.big.0)
[ "$dsize" -lt $((big / 10)) ] || fail "delta of the shifted big file is $dsize bytes"
echo "ok: cross-tool deltas and patches reproduce every new file (big delta: $dsize bytes)"

# --- statistics -----------------------------------------------------------------
"$R" -s 2>/dev/null && fail "options before the command are not supported yet, and must fail"
"$R" signature -s B_odd st.sig 2>st.err
grep -q "signature statistics: signature\[" st.err || fail "no signature statistics"
"$R" delta --statistics st.sig N_odd st.delta 2>st.err
grep -q "delta statistics:" st.err || fail "no delta statistics"
"$R" patch --stats B_odd st.delta st.new 2>st.err
grep -q "patch statistics:" st.err || fail "no patch statistics"

# --- errors --------------------------------------------------------------------
# expect CODE OUTPUT PATTERN -- COMMAND...: the command exits with CODE, says
# one line on stderr matching PATTERN, and OUTPUT does not exist afterwards
# (nor any temporary file in the directory).
expect() {
	local code=$1 out=$2 pat=$3 rc=0 lines
	shift 4
	"$@" >cmd.out 2>cmd.err || rc=$?
	[ "$rc" = "$code" ] || fail "'$*' exited $rc, expected $code: $(cat cmd.err)"
	lines=$(wc -l <cmd.err)
	[ "$lines" = 1 ] || fail "'$*' printed $lines lines on stderr: $(cat cmd.err)"
	grep -q -- "$pat" cmd.err || fail "'$*' said '$(cat cmd.err)', expected /$pat/"
	if [ "$out" != - ]; then
		[ ! -e "$out" ] || fail "'$*' left '$out' behind"
	fi
	if ls -A | grep -q '^\.'; then
		fail "'$*' left a temporary file: $(ls -A | grep '^\.')"
	fi
}
# rdiff_code COMMAND...: rdiff's exit status for the same arguments
rdiff_code() {
	local rc=0
	rdiff "$@" >/dev/null 2>&1 || rc=$?
	echo "$rc"
}

sig=s.sig.big.0
delta=s.delta.big.0
head -c 7 $sig >trunc1.sig
head -c $(($(stat -c %s $sig) - 5)) $sig >trunc2.sig
mkimg fill garbage 4096 13
head -c $((dsize / 2)) $delta >trunc.delta
# a header with an absurd block length (2^31) and a valid magic
printf '\x72\x73\x01\x47\x80\x00\x00\x00\x00\x00\x00\x20' >huge.sig
cat $sig >>huge.sig
# a header with a strong sum longer than BLAKE2 gives
printf '\x72\x73\x01\x47\x00\x00\x08\x00\x00\x00\x00\x40' >long.sig

expect 103 o "truncated" -- "$R" delta trunc1.sig N_big o
[ "$(rdiff_code delta trunc1.sig N_big o.r)" = 103 ] || fail "rdiff's code for a truncated signature changed"
expect 103 o "truncated" -- "$R" delta trunc2.sig N_big o
expect 104 o "not a librsync signature" -- "$R" delta garbage N_big o
# rdiff checks the block length before the magic number, so it says 106
# (corrupt) for garbage whose second word is negative; we check the magic
# first and say 104 (not a signature).
case $(rdiff_code delta garbage N_big o.r2) in
104 | 106) ;;
*) fail "rdiff's code for a garbage signature changed" ;;
esac
expect 104 o "not a librsync signature" -- "$R" delta $delta N_big o
expect 106 o "corrupt" -- "$R" delta huge.sig N_big o
expect 106 o "corrupt" -- "$R" delta long.sig N_big o
expect 104 o "not a librsync delta" -- "$R" patch B_big garbage o
[ "$(rdiff_code patch B_big garbage o.r3)" = 104 ] || fail "rdiff's code for a garbage delta changed"
expect 104 o "not a librsync delta" -- "$R" patch B_big $sig o
expect 103 o "truncated" -- "$R" patch B_big trunc.delta o
[ "$(rdiff_code patch B_big trunc.delta o.r4)" = 103 ] || fail "rdiff's code for a truncated delta changed"
expect 103 o "right basis" -- "$R" patch B_odd $delta o
expect 100 o "seekable" -- bash -c "cat B_big | '$R' patch - $delta o"
expect 100 o "No such file" -- "$R" signature missing o
[ "$(rdiff_code signature missing o.r5)" = 100 ] || fail "rdiff's code for a missing file changed"
expect 100 o "No such file" -- "$R" delta missing N_big o
expect 100 o "No such file" -- "$R" delta $sig missing o
expect 100 o "No such file" -- "$R" patch missing $delta o
expect 100 o "No such file" -- "$R" patch B_big missing o
expect 100 o "No space left" -- "$R" signature -f B_big /dev/full
[ "$(rdiff_code signature -f B_big /dev/full)" = 100 ] || fail "rdiff's code for a full disk changed"
expect 100 o "Is a directory" -- "$R" signature -f B_odd .
mkdir ro && chmod 0555 ro
if ! touch ro/x 2>/dev/null; then # root can write anyway
	expect 100 ro/o "cannot create" -- "$R" signature B_odd ro/o
fi
rm -rf ro
# usage errors: rdiff's code 101
expect 101 o "missing arguments" -- "$R" delta
[ "$(rdiff_code delta)" = 101 ] || fail "rdiff's code for a missing argument changed"
expect 101 o "missing arguments" -- "$R" patch
expect 101 o "too many arguments" -- "$R" signature B_odd o x
[ "$(rdiff_code signature B_odd o.r6 x)" = 101 ] || fail "rdiff's code for too many arguments changed"
expect 101 o "unknown option" -- "$R" signature --bogus B_odd o
expect 101 o "unknown option" -- "$R" signature -x B_odd o
expect 101 o "unknown hash" -- "$R" signature -H sha1 B_odd o
[ "$(rdiff_code -H sha1 signature B_odd o.r7)" = 101 ] || fail "rdiff's code for an unknown hash changed"
expect 101 o "unknown rollsum" -- "$R" signature -R adler B_odd o
expect 101 o "not a number" -- "$R" signature -b 1k B_odd o
expect 101 o "needs a value" -- "$R" signature B_odd o -b
expect 101 o "standard input" -- "$R" delta - -
expect 101 o "standard input" -- "$R" patch - -
# bad parameters: rdiff's code 108
expect 108 o "invalid sum size" -- "$R" signature -S 33 B_odd o
[ "$(rdiff_code -S 33 signature B_odd o.r8)" = 108 ] || fail "rdiff's code for a bad sum size changed"
expect 108 o "invalid sum size" -- "$R" signature -H md4 -S 17 B_odd o
expect 108 o "invalid sum size" -- "$R" signature -S -2 B_odd o
expect 108 o "invalid block size" -- "$R" signature -b -1 B_odd o
expect 108 o "invalid block size" -- "$R" signature -b $((1 << 27)) B_odd o
expect 105 o "compression" -- "$R" delta -z $sig N_big o
rm -f o.r*

# an existing output is kept without --force, replaced with it
printf 'keep me' >exists
expect 100 - "exists" -- "$R" signature B_odd exists
[ "$(cat exists)" = "keep me" ] || fail "an existing output was changed without --force"
[ "$(rdiff_code signature B_odd exists)" = 100 ] || fail "rdiff's code for an existing output changed"
"$R" signature -f B_odd exists || fail "signature --force"
cmp -s exists r.sig.odd.0 || fail "--force did not replace the output"
# a failed --force run leaves the old file as it was
cp exists exists.before
expect 103 - "truncated" -- "$R" delta -f trunc1.sig N_big exists
cmp -s exists exists.before || fail "a failed --force run changed the existing output"
# through a symlink, the file it points to is replaced and the link stays
ln -s exists link
"$R" patch -f B_odd s.delta.odd.0 link || fail "patch through a symlink"
[ -L link ] || fail "the symlink was replaced"
cmp -s exists N_odd || fail "the symlink's target was not replaced"

# help and version go to stdout, exit 0
"$R" signature --help | grep -q "usage: resync-diff signature" || fail "--help"
"$R" delta -h | grep -q "usage:" || fail "-h"
"$R" patch '-?' | grep -q "usage:" || fail "-?"
"$R" patch -V | grep -q "librsync" || fail "-V"
echo "ok: errors"

# options before the command, as rdiff takes them
"$R" -b 512 -S 8 signature B_odd pre.sig || fail "options before the command"
rdiff -b 512 -S 8 signature B_odd pre.r.sig
cmp -s pre.sig pre.r.sig || fail "signature with leading options differs from rdiff's"
echo "ok: leading options"
