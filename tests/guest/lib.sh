# shellcheck shell=bash
# Helpers shared by the guest suite's test scripts. Source it after `set -euo pipefail`.
#
# Environment (all optional; meson's default test setup sets the first two):
#   SLSVIRT_ROOT          repo root (default: derived from this file)
#   SLSVIRT_BUILD_ROOT    the repo's build/ (default: $SLSVIRT_ROOT/build)
#   SLSVIRT_QEMU          QEMU binary (default: build/qemu/qemu-system-x86_64)
#   SLSVIRT_HOSTD         slsvirtd binary (default: build/meson/hostd/slsvirtd)
#   SLSVIRT_GUEST_DIR     guest image dir (default: build/guest)
#   SLSVIRT_NO_IMAGE_BUILD=1  use the image as it is instead of running build-image
#   SLSVIRT_QEMU_TIMEOUT  seconds one QEMU run may take (default 240)
#   SLSVIRT_KEEP_TMP=1    keep the test's temp dir (console, hostd log, store)

SLSVIRT_ROOT=${SLSVIRT_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SLSVIRT_BUILD_ROOT=${SLSVIRT_BUILD_ROOT:-$SLSVIRT_ROOT/build}
QEMU=${SLSVIRT_QEMU:-$SLSVIRT_BUILD_ROOT/qemu/qemu-system-x86_64}
HOSTD=${SLSVIRT_HOSTD:-$SLSVIRT_BUILD_ROOT/meson/hostd/slsvirtd}
GUEST_DIR=${SLSVIRT_GUEST_DIR:-$SLSVIRT_BUILD_ROOT/guest}
QEMU_TIMEOUT=${SLSVIRT_QEMU_TIMEOUT:-240}
TEST_NAME=$(basename "$0")

HOSTD_PID=
QEMU_PID=
TMP=

log() { echo "$TEST_NAME: $*"; }

# A test that cannot run fails with the reason: it never passes silently.
fail() {
	echo "$TEST_NAME: FAIL: $*" >&2
	exit 1
}

cleanup() {
	local rc=$?

	if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
		kill "$QEMU_PID" 2>/dev/null || true
		wait "$QEMU_PID" 2>/dev/null || true
	fi
	if [ -n "$HOSTD_PID" ] && kill -0 "$HOSTD_PID" 2>/dev/null; then
		kill "$HOSTD_PID" 2>/dev/null || true
		wait "$HOSTD_PID" 2>/dev/null || true
	fi
	if [ -n "$TMP" ] && [ -d "$TMP" ]; then
		if [ "${SLSVIRT_KEEP_TMP:-0}" = 1 ]; then
			echo "$TEST_NAME: kept $TMP"
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$rc"
}

# Temp dir with run/ (0700, sockets) and store/; cleaned up on exit.
make_tmp() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/slsvirt-$TEST_NAME.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	RUN_DIR=$TMP/run
	STORE=$TMP/store
	CONSOLE=$TMP/console.log
	mkdir -m 0700 "$RUN_DIR"
	mkdir "$STORE"
}

need_qemu() {
	[ -x "$QEMU" ] || fail "prerequisite missing: QEMU binary $QEMU (build it with scripts/setup)"
	"$QEMU" -device help 2>/dev/null | grep -q '"slsvirt-pci"' ||
		fail "prerequisite missing: $QEMU has no slsvirt-pci device"
	[ -r /usr/share/seabios/bios-256k.bin ] ||
		fail "prerequisite missing: /usr/share/seabios/bios-256k.bin (install seabios)"
	command -v timeout >/dev/null || fail "prerequisite missing: timeout (coreutils)"
}

need_hostd() {
	[ -x "$HOSTD" ] || fail "prerequisite missing: hostd binary $HOSTD (meson compile -C build/meson)"
}

# Brings the image up to date (fast when nothing changed), then checks it.
need_image() {
	if [ "${SLSVIRT_NO_IMAGE_BUILD:-0}" != 1 ]; then
		"$SLSVIRT_ROOT/tests/guest/build-image" "$GUEST_DIR" ||
			fail "prerequisite missing: tests/guest/build-image $GUEST_DIR failed"
	fi
	local f
	for f in vmlinuz initramfs.cpio.gz; do
		[ -s "$GUEST_DIR/$f" ] ||
			fail "prerequisite missing: guest image $GUEST_DIR/$f (run tests/guest/build-image $GUEST_DIR)"
	done
}

# Starts a private slsvirtd on $RUN_DIR/slsvirtd.sock with store $STORE.
start_hostd() {
	local i

	"$HOSTD" --socket "$RUN_DIR/slsvirtd.sock" --store-root "$STORE" >"$TMP/hostd.log" 2>&1 &
	HOSTD_PID=$!
	for ((i = 0; i < 100; i++)); do
		[ -S "$RUN_DIR/slsvirtd.sock" ] && return 0
		if ! kill -0 "$HOSTD_PID" 2>/dev/null; then
			wait "$HOSTD_PID" || true
			HOSTD_PID=
			sed 's/^/  hostd: /' "$TMP/hostd.log" >&2
			fail "slsvirtd exited before creating its socket"
		fi
		sleep 0.1
	done
	sed 's/^/  hostd: /' "$TMP/hostd.log" >&2
	fail "slsvirtd did not create $RUN_DIR/slsvirtd.sock within 10 s"
}

# run_guest VM SOCKET APPEND...: boots the guest with the briefing's command
# line, bounded by $QEMU_TIMEOUT; sets QEMU_RC, console in $CONSOLE.
run_guest() {
	local vm=$1 socket=$2
	shift 2

	log "booting guest: sls ${*} (timeout ${QEMU_TIMEOUT}s)"
	QEMU_START=$(date +%s%N)
	timeout --kill-after=10 "$QEMU_TIMEOUT" "$QEMU" \
		-L /usr/share/seabios -L /usr/share/qemu \
		-machine q35 -accel tcg -cpu max -smp 1 -m 256M \
		-nodefaults -no-user-config -nographic -no-reboot \
		-chardev "file,id=con0,path=$CONSOLE" -serial chardev:con0 \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		-kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initramfs.cpio.gz" \
		-append "console=ttyS0 quiet panic=-1 $*" \
		-device "slsvirt-pci,id=sls0,vm=$vm,socket=$socket" \
		-qmp "unix:$RUN_DIR/$vm.qmp,server=on,wait=off" -pidfile "$RUN_DIR/$vm.pid" \
		</dev/null >"$TMP/qemu.log" 2>&1 &
	QEMU_PID=$!
	QEMU_RC=0
	wait "$QEMU_PID" || QEMU_RC=$?
	QEMU_PID=
	local ms=$((($(date +%s%N) - QEMU_START) / 1000000))
	log "QEMU exited with status $QEMU_RC after $((ms / 1000)).$(printf %03d $((ms % 1000))) s"
}

show_logs() {
	echo "---- console ($CONSOLE) ----"
	cat "$CONSOLE" 2>/dev/null || true
	echo "---- qemu stderr ----"
	cat "$TMP/qemu.log" 2>/dev/null || true
	if [ -f "$TMP/hostd.log" ]; then
		echo "---- hostd log ----"
		tail -n 50 "$TMP/hostd.log"
	fi
	echo "----"
}

# check_verdict [NAME]: QEMU must exit 33 (isa-debug-exit PASS) with the
# marker "SLS: NAME PASS" (default ioctl-test).
check_verdict() {
	local marker="SLS: ${1:-ioctl-test} PASS"

	grep -a '^SLS: ' "$CONSOLE" 2>/dev/null | sed 's/^/  /' || true
	if [ "$QEMU_RC" = 124 ] || [ "$QEMU_RC" = 137 ]; then
		show_logs
		fail "QEMU timed out after ${QEMU_TIMEOUT}s"
	fi
	if [ "$QEMU_RC" != 33 ] || ! grep -aq "^$marker" "$CONSOLE"; then
		show_logs
		fail "QEMU exit status $QEMU_RC (want 33) or no '$marker' on the console"
	fi
	log "PASS"
}
