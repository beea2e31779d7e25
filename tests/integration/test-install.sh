#!/usr/bin/env bash
# meson install into a DESTDIR lays out the programs, the systemd unit and
# the man pages (when scdoc is present), and the unit is Type=notify and
# runs the installed resyncd.
set -euo pipefail
build=${RESYNC_BUILD:?}
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --no-rebuild --destdir "$dest" >"$dest.log" 2>&1 ||
	{ cat "$dest.log"; rm -f "$dest.log"; exit 1; }
rm -f "$dest.log"
prefix=$(meson introspect "$build" --buildoptions |
	python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
root="$dest$prefix"
fail() { echo "FAIL: $*" >&2; exit 1; }
for b in resyncd resyncctl resyncfs resync-diff; do
	[ -x "$root/bin/$b" ] || fail "bin/$b not installed"
done
unit="$root/lib/systemd/system/resyncd@.service"
[ -f "$unit" ] || fail "resyncd@.service not installed"
grep -qx 'Type=notify' "$unit" || fail "the unit is not Type=notify"
grep -qx 'Restart=on-failure' "$unit" || fail "the unit does not restart on failure"
grep -q "^ExecStart=$prefix/bin/resyncd --config .* --node %i\$" "$unit" ||
	fail "ExecStart does not run the installed resyncd: $(grep ExecStart "$unit")"
if command -v scdoc >/dev/null; then
	for p in man8/resyncd.8 man8/resyncctl.8 man8/resyncfs.8 man1/resync-diff.1 man5/resync.conf.5; do
		f="$root/share/man/$p"
		[ -s "$f" ] || fail "man page $p not installed"
		grep -q '^\.TH' "$f" || fail "$p is not a roff man page"
	done
	# Every option that a program's --help lists is in its man page.
	plain() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\(.. //g' "$1"; }
	check_opts() { # PAGE HELP-COMMAND...
		local page=$1 o text
		shift
		text=$(plain "$root/share/man/$page")
		for o in $("$@" 2>&1 | grep -o -- '--[a-z][a-z-]*' | sort -u); do
			grep -qF -- "$o" <<<"$text" || fail "$page does not describe '$o' of '$*'"
		done
		for o in $("$@" 2>&1 | sed -n 's/^  -o \([a-z_]*\).*/\1/p' | grep -v OTHER | sort -u); do
			grep -qw -- "$o" <<<"$text" || fail "$page does not describe '-o $o' of '$*'"
		done
	}
	check_opts man8/resyncd.8 "$build/daemon/resyncd" --help
	check_opts man8/resyncfs.8 "$build/tools/resyncfs" --help
	for c in sync compare signature delta patch; do
		check_opts man1/resync-diff.1 "$build/tools/resync-diff" $c --help
	done
	for c in $("$build/tools/resyncctl" --help | awk '/^  [a-z]/ {print $1}'); do
		check_opts man8/resyncctl.8 "$build/tools/resyncctl" "$c" --help
	done
	# Every resyncctl command of --help has its section in resyncctl(8).
	for c in $("$build/tools/resyncctl" --help | awk '/^  [a-z]/ {print $1}'); do
		grep -q "^\\\\fB$c\\\\fR" "$root/share/man/man8/resyncctl.8" ||
			fail "resyncctl(8) does not describe '$c'"
	done
fi
echo "ok: binaries, resyncd@.service and man pages under $prefix"
