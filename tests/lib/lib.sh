# Shell helpers for the cli and integration tests. Source it:
#   . "$RESYNC_SOURCE/tests/lib/lib.sh"
# Provides: fail, check, tmpdir_setup (a scratch dir removed on exit, with
# cleanup hooks), wait_for (poll a command until it succeeds or a deadline
# passes), and mkimg (the resync-test-mkimg helper).

# Print a failure and exit 1.
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# check DESCRIPTION COMMAND...: run COMMAND, fail with DESCRIPTION if it fails.
check() {
	local what=$1
	shift
	"$@" || fail "$what"
}

# Cleanup hooks run in reverse order on exit, then the scratch dir goes.
_cleanup_hooks=()
on_exit() {
	_cleanup_hooks+=("$*")
}
_run_cleanup() {
	local i
	for ((i = ${#_cleanup_hooks[@]} - 1; i >= 0; i--)); do
		eval "${_cleanup_hooks[$i]}" || true
	done
	[ -n "${T:-}" ] && rm -rf -- "$T"
}

# Make $T, a fresh scratch dir under $TMPDIR (or /tmp), removed on exit.
tmpdir_setup() {
	T=$(mktemp -d "${TMPDIR:-/tmp}/resync-test-XXXXXX")
	trap _run_cleanup EXIT
	trap 'exit 130' INT TERM
}

# wait_for SECONDS COMMAND...: run COMMAND until it succeeds, polling with
# a short back-off; returns 1 if SECONDS pass first (after a last try).
wait_for() {
	local timeout=$1
	shift
	local deadline=$((SECONDS + timeout)) pause=0.01
	while ! "$@"; do
		if ((SECONDS >= deadline)); then
			"$@"
			return
		fi
		sleep "$pause"
		case $pause in
		0.01) pause=0.02 ;;
		0.02) pause=0.05 ;;
		*) pause=0.1 ;;
		esac
	done
}

# The image builder; RESYNC_BUILD is set by meson's test environment.
mkimg() {
	"${RESYNC_MKIMG:-$RESYNC_BUILD/tests/lib/resync-test-mkimg}" "$@"
}
