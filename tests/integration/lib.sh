# shellcheck shell=bash
# Helpers for the integration suite: the guest suite's helpers (temp dirs,
# prerequisites, fail()) plus the user's own tool, slsctl, driving real
# QEMU + slsvirtd + guest. Source after `set -euo pipefail`.
# shellcheck source=../guest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../guest/lib.sh"

SLSCTL=${SLSVIRT_SLSCTL:-$SLSVIRT_BUILD_ROOT/meson/hostd/slsctl}

need_slsctl() {
	[ -x "$SLSCTL" ] || fail "prerequisite missing: $SLSCTL (meson compile -C build/meson)"
}

# Everything slsctl starts (QEMU, slsvirtd) leaves a pidfile in the run dir.
# gone PID: true once PID has exited (a zombie counts: its files are closed).
gone() {
	local st
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
	[ -z "$st" ] || [ "$st" = Z ]
}

# kill_run_dir: SIGKILL every process with a pidfile in the run dir and wait
# (up to 30 s) until each has exited: what comes next may need what they
# held (the nested suite unloads kvm.ko right after).
kill_run_dir() {
	local f pid pids=() i
	for f in "$RUN_DIR"/*.pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f") || continue
		kill -9 "$pid" 2>/dev/null && pids+=("$pid")
	done
	for pid in "${pids[@]}"; do
		for ((i = 0; i < 600; i++)); do
			gone "$pid" && break
			sleep 0.05
		done
	done
}

setup_integration() {
	need_qemu
	need_hostd
	need_slsctl
	need_image
	make_tmp
	# cleanup exits with the status it finds in $?: keep the test's own.
	trap 'rc=$?; kill_run_dir; (exit $rc); cleanup' EXIT
	export SLSVIRT_RUN_DIR=$RUN_DIR SLSVIRT_STORE_ROOT=$STORE SLSVIRT_QEMU=$QEMU
	export SLSVIRT_KERNEL=$GUEST_DIR/vmlinuz SLSVIRT_INITRD=$GUEST_DIR/initramfs.cpio.gz
	export SLSVIRT_HOSTD=$HOSTD
	unset SLSVIRTD_FAULT
}

# wait_for FILE REGEX SECONDS: until a line of FILE matches REGEX.
wait_for() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		grep -aq -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "---- $1 ----"; cat "$1" 2>/dev/null || true
	[ -f "$TMP/run/slsvirtd.log" ] && { echo "---- hostd ----"; tail -n 30 "$TMP/run/slsvirtd.log"; }
	fail "no line matching '$2' in $1 within $3 s"
}

# kill_vm VM: SIGKILL the VM's QEMU and wait until it is gone.
kill_vm() {
	local pid
	pid=$(cat "$RUN_DIR/$1.pid") || fail "no pidfile for $1"
	kill -9 "$pid"
	until gone "$pid"; do sleep 0.05; done
	log "QEMU of $1 (pid $pid) killed with SIGKILL"
}

# marker FILE SED-EXPR: the first value a 'SLS: ' line yields.
marker() {
	sed -n "$2" "$1" | head -n 1
}
