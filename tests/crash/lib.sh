# shellcheck shell=bash disable=SC2034,SC2119,SC2120
# (globals set here are read by the scripts that source this file; some
#  helpers take optional arguments that only those scripts pass)
# Helpers for the crash suite, on top of the integration suite's (temp dirs,
# prerequisites, slsctl, wait_for, fail). Source after `set -euo pipefail`.
#
# How a test checks "restored memory == an acked epoch, byte for byte":
#  - the VM's RAM is a file on tmpfs (memory-backend-file, id pc.ram, so the
#    RAM block keeps the name and size it has without it), passed with
#    slsctl run --qemu-arg and so kept in vm.conf for every restore;
#  - restore stops before the guest runs (slsctl restore --paused, or the
#    same QEMU command line + -S and QMP sls-restore by hand);
#  - the restored epoch's RAM image comes from the store (slsctl export, or
#    sls-ram-export from this folder until slsctl has it) and is compared
#    with the RAM file by cmp; then QMP cont. (Exporting first would race
#    with a hostd that still commits the epoch QEMU captured just before
#    it was killed: that epoch is durable and restore rightly takes it.)
# shellcheck source=../integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"

CRASH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QMP=$CRASH_DIR/qmp
RAM_EXPORT=${SLSVIRT_RAM_EXPORT:-${SLSVIRT_MESON_BUILD:-$SLSVIRT_BUILD_ROOT/meson}/tests/crash/sls-ram-export}
GUEST_MEM=256M
PERIOD_MS=${SLSVIRT_CRASH_PERIOD_MS:-10}

# The features this suite is written against; each missing one fails the
# test with its name (the suite never skips).
need_continuous() {
	"$SLSCTL" run --help 2>/dev/null | grep -q -- '--period-ms' ||
		fail "prerequisite missing: 'slsctl run --period-ms' (continuous checkpointing) does not exist yet"
	"$QEMU" -device slsvirt-pci,help 2>/dev/null | grep -q 'period-ms' ||
		fail "prerequisite missing: $QEMU's slsvirt-pci has no 'period-ms' property (continuous checkpointing)"
}

# need_fault NAME...: slsvirtd must know these fault points.
need_fault() {
	local f help
	help=$("$HOSTD" --help 2>&1 || true)
	for f in "$@"; do
		grep -q -- "$f" <<<"$help" ||
			fail "prerequisite missing: slsvirtd has no fault point '$f' (slsvirtd --help)"
	done
}

need_export() {
	if "$SLSCTL" export --help >/dev/null 2>&1; then
		return 0
	fi
	[ -x "$RAM_EXPORT" ] ||
		fail "prerequisite missing: neither 'slsctl export' nor $RAM_EXPORT (meson compile -C build/meson)"
}

setup_crash() {
	setup_integration
	need_continuous
	need_export
	command -v cmp >/dev/null || fail "prerequisite missing: cmp (diffutils)"
	[ -x /usr/bin/python3 ] || fail "prerequisite missing: /usr/bin/python3 (for tests/crash/qmp)"
	local shm=/dev/shm
	[ -d "$shm" ] && [ -w "$shm" ] || shm=$TMP
	SHM_DIR=$(mktemp -d "$shm/slsvirt-$TEST_NAME.XXXXXX")
	trap crash_exit EXIT
	LOGS=$TMP/logs
	mkdir -p "$LOGS"
	SEED=${SLSVIRT_CRASH_SEED:-$(( $(date +%s) % 100000 ))}
	RANDOM=$SEED
	log "random seed $SEED (SLSVIRT_CRASH_SEED=$SEED reproduces the choices)"
}

# The exit trap: stop what the test started, then the temp dir (cleanup
# exits with the status it finds in $?, so hand it the test's).
crash_exit() {
	local rc=$?
	kill_run_dir
	rm -rf "$SHM_DIR"
	(exit "$rc")
	cleanup
}

# ram_args VM: slsctl run options that put VM's RAM in a file we can read.
ram_file() { echo "$SHM_DIR/$1.ram"; }
ram_args() {
	echo --mem "$GUEST_MEM" \
		--qemu-arg=-object --qemu-arg="memory-backend-file,id=pc.ram,size=$GUEST_MEM,mem-path=$(ram_file "$1"),share=on" \
		--qemu-arg=-machine --qemu-arg=memory-backend=pc.ram
}

qmp() { /usr/bin/python3 "$QMP" "$@"; }

# A millisecond sleep: sleep_ms N.
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
# rand_ms LO HI: uniform-ish in [LO, HI].
rand_ms() { echo $(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1))); }

pid_of() { cat "$RUN_DIR/$1.pid" 2>/dev/null || true; }
hostd_pid() { cat "$RUN_DIR/slsvirtd.pid" 2>/dev/null || true; }
# alive PID: the process exists and is not a zombie (PID 1 here may take a
# while to reap a daemon it inherited).
alive() {
	[ -n "$1" ] && kill -0 "$1" 2>/dev/null &&
		[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# kill9 PID...: SIGKILL all at once, then wait until every one is gone.
kill9() {
	local p
	kill -9 "$@" 2>/dev/null || true
	for p in "$@"; do
		while alive "$p"; do sleep 0.02; done
	done
}

# start_hostd_daemon [SLSVIRTD ARGS...]: slsvirtd as slsctl starts it
# (daemon, pidfile and log in the run dir), plus e.g. --fault / --retain.
start_hostd_daemon() {
	local i
	rm -f "$RUN_DIR/slsvirtd.sock"
	"$HOSTD" --socket "$RUN_DIR/slsvirtd.sock" --store-root "$STORE" --daemonize \
		--pidfile "$RUN_DIR/slsvirtd.pid" --log "$RUN_DIR/slsvirtd.log" "$@" \
		>>"$RUN_DIR/slsvirtd.out" 2>&1 ||
		fail "slsvirtd did not start: $(tail -n 5 "$RUN_DIR/slsvirtd.out" "$RUN_DIR/slsvirtd.log" 2>/dev/null)"
	for ((i = 0; i < 200; i++)); do
		[ -S "$RUN_DIR/slsvirtd.sock" ] && alive "$(hostd_pid)" && return 0
		sleep 0.05
	done
	fail "slsvirtd did not create its socket within 10 s"
}

ensure_hostd() {
	alive "$(hostd_pid)" && [ -S "$RUN_DIR/slsvirtd.sock" ] && return 0
	start_hostd_daemon
}

# run_vm VM CONSOLE APPEND [SLSCTL RUN OPTIONS...]: boots VM detached with
# continuous checkpointing and its RAM in a file; remembers QEMU's command
# line for restores by hand ($TMP/VM.argv).
run_vm() {
	local vm=$1 console=$2 append=$3
	shift 3
	rm -f "$(ram_file "$vm")"
	# shellcheck disable=SC2046 # ram_args is a word list without spaces in words
	"$SLSCTL" run "$vm" --detach --console "$console" --append "$append" $(ram_args "$vm") "$@" \
		>"$TMP/run-$vm.out" 2>&1 || fail "slsctl run $vm failed: $(cat "$TMP/run-$vm.out")"
	tr '\0' '\n' <"/proc/$(pid_of "$vm")/cmdline" >"$TMP/$vm.argv" ||
		fail "cannot read QEMU's command line for $vm"
}

# ls_table FILE: `slsctl ls` output (in FILE) as "EPOCH STATUS KIND PARENT
# RESTORABLE" rows, columns found by their header names; a column slsctl
# does not print is "?".
ls_table() {
	awk 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		function f(name) { return (name in col) ? $col[name] : "?" }
		$1 ~ /^[0-9]+$/ { print $1, f("STATUS"), f("KIND"), f("PARENT"), f("RESTORABLE") }' "$1"
}

have_paused_restore() { "$SLSCTL" restore --help 2>/dev/null | grep -q -- '--paused'; }

# export_epoch VM EPOCH OUT: the store's RAM image of EPOCH (0 = the newest
# the store would restore), block pc.ram only; prints the epoch number.
export_epoch() {
	local vm=$1 epoch=$2 out=$3 txt
	local eopt=()
	[ "$epoch" != 0 ] && eopt=(--epoch "$epoch")
	if "$SLSCTL" export --help >/dev/null 2>&1; then
		txt=$("$SLSCTL" export "$vm" "${eopt[@]}" --block pc.ram --out "$out" 2>&1) ||
			{ echo "$txt" >&2; return 1; }
	else
		txt=$("$RAM_EXPORT" --store-root "$STORE" --vm "$vm" "${eopt[@]}" --block pc.ram --out "$out" 2>&1) ||
			{ echo "$txt" >&2; return 1; }
	fi
	sed -n 's/^epoch \([0-9]*\).*/\1/p' <<<"$txt" | head -n 1
}

# restore_paused VM CONSOLE [EPOCH]: QEMU restored from the store (EPOCH or
# the newest restorable) and stopped before the guest runs a single
# instruction; sets RESTORED_EPOCH. Starts slsvirtd if it is not running.
# While hostd still holds the connection of the QEMU that was just killed
# (it finishes the epoch in flight first), it refuses the VM with
# "already connected": that is retried for up to 10 s and counted in
# $LOGS/busy-retries (the test prints the count).
restore_paused() {
	local try
	for ((try = 0; try < 50; try++)); do
		restore_paused_once "$@" 2>"$TMP/restore.err" && return 0
		grep -q 'already connected' "$TMP/restore.err" || break
		kill9 "$(pid_of "$1")"
		echo "$1" >>"$LOGS/busy-retries"
		sleep 0.2
	done
	cat "$TMP/restore.err" >&2
	return 1
}

# busy_note: one line about restores hostd refused as "already connected".
busy_note() {
	local n
	n=0
	[ -f "$LOGS/busy-retries" ] && n=$(wc -l <"$LOGS/busy-retries")
	[ "$n" -eq 0 ] || log "note: hostd refused a restore $n time(s) with 'already connected' (old connection" \
		"still open after SIGKILL of its QEMU); each was retried after 200 ms"
}

restore_paused_once() {
	local vm=$1 console=$2 epoch=${3:-0} out i
	rm -f "$(ram_file "$vm")"
	RESTORED_EPOCH=
	if have_paused_restore; then
		local eopt=()
		[ "$epoch" != 0 ] && eopt=(--epoch "$epoch")
		out=$("$SLSCTL" restore "$vm" --paused --detach --console "$console" "${eopt[@]}" 2>&1) ||
			{ echo "$out" >&2; return 1; }
		echo "$out" >>"$LOGS/restore.log"
		RESTORED_EPOCH=$(sed -n 's/^restored epoch \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
	else
		# What slsctl restore does, minus the cont: the VM's own command
		# line, a new console, -S.
		ensure_hostd
		local argv
		mapfile -t argv <"$TMP/$vm.argv"
		for i in "${!argv[@]}"; do
			case ${argv[$i]} in
			file,id=con0,path=*) argv[i]="file,id=con0,path=$console" ;;
			esac
		done
		printf '%s\n' "${argv[@]}" | grep -qx -- -S || argv+=(-S)
		rm -f "$RUN_DIR/$vm.qmp" "$RUN_DIR/$vm.pid"
		# Not our child (like slsctl's QEMU): the shell neither tracks nor reaps it.
		(setsid "${argv[@]}" </dev/null >>"$RUN_DIR/$vm.qemu.log" 2>&1 &)
		local args='{}'
		[ "$epoch" != 0 ] && args="{\"epoch\": $epoch}"
		out=$(qmp "$RUN_DIR/$vm.qmp" --wait 60 --timeout 300 sls-restore "$args" 2>&1) ||
			{ echo "$out" >&2; return 1; }
		RESTORED_EPOCH=$(sed -n 's/.*"epoch": *\([0-9]*\).*/\1/p' <<<"$out")
	fi
	[ -n "$RESTORED_EPOCH" ] || { echo "restore did not say which epoch it restored: $out" >&2; return 1; }
}

cont_vm() { qmp "$RUN_DIR/$1.qmp" cont >/dev/null; }

# acks CONSOLE: "SEQ EPOCH" for every ack line, in console order. A line the
# kill cut before "acked" does not count. (The serial console ends lines
# with CR LF.)
acks() {
	tr -d '\r' <"$1" 2>/dev/null |
		sed -n 's/^SLS: chain seq=\([0-9]*\) epoch=\([0-9]*\) acked$/\1 \2/p'
}

# last_acked CONSOLE: "SEQ EPOCH" of the newest ack (or "0 0").
last_acked() {
	local l
	l=$(acks "$1" | sort -n -k2,2 -k1,1 | tail -n 1)
	echo "${l:-0 0}"
}

# check_restore VM EPOCH CONSOLE MIN_SEQ TAG: restore EPOCH (0 = newest)
# paused, compare its RAM with the store's image byte for byte, cont, and
# wait for the guest's first chain verify: it must be ok and cover MIN_SEQ.
# Leaves the VM running; returns 1 with the reason in $CHECK_ERR.
check_restore() {
	local vm=$1 want=$2 console=$3 min_seq=$4 tag=$5 exported vline vseq
	CHECK_ERR=
	restore_paused "$vm" "$console" "$want" 2>"$LOGS/$tag.restore.err" ||
		{ CHECK_ERR="restore failed: $(tail -n 5 "$LOGS/$tag.restore.err")"; return 1; }
	if [ "$want" != 0 ] && [ "$RESTORED_EPOCH" != "$want" ]; then
		CHECK_ERR="asked to restore epoch $want, got epoch $RESTORED_EPOCH"
		return 1
	fi
	exported=$(export_epoch "$vm" "$RESTORED_EPOCH" "$TMP/epoch.ram" 2>"$LOGS/$tag.export.err") ||
		{ CHECK_ERR="export of the restored epoch $RESTORED_EPOCH failed: $(tail -n 3 "$LOGS/$tag.export.err")"; return 1; }
	if [ "$exported" != "$RESTORED_EPOCH" ]; then
		CHECK_ERR="export wrote epoch '$exported', not the restored epoch $RESTORED_EPOCH"
		return 1
	fi
	if ! cmp "$(ram_file "$vm")" "$TMP/epoch.ram" >"$LOGS/$tag.cmp" 2>&1; then
		CHECK_ERR="RAM after restoring epoch $RESTORED_EPOCH differs from the store's image: $(head -n 1 "$LOGS/$tag.cmp")"
		cp "$TMP/epoch.ram" "$LOGS/$tag.epoch.ram"
		cp "$(ram_file "$vm")" "$LOGS/$tag.restored.ram"
		return 1
	fi
	cont_vm "$vm" || { CHECK_ERR="QMP cont failed"; return 1; }
	local i
	for ((i = 0; i < 300; i++)); do
		vline=$(tr -d '\r' <"$console" 2>/dev/null | grep -a -m1 '^SLS: chain verify ' || true)
		[ -n "$vline" ] && break
		alive "$(pid_of "$vm")" || { CHECK_ERR="QEMU died after cont: $(tail -n 3 "$RUN_DIR/$vm.qemu.log")"; return 1; }
		sleep 0.1
	done
	[ -n "$vline" ] || { CHECK_ERR="no 'chain verify' line within 30 s of cont"; return 1; }
	case $vline in
	"SLS: chain verify ok seq="*) ;;
	*) CHECK_ERR="guest after restoring epoch $RESTORED_EPOCH: $vline"; return 1 ;;
	esac
	vseq=$(sed -n 's/^SLS: chain verify ok seq=\(-\{0,1\}[0-9]*\).*/\1/p' <<<"$vline")
	if [ "${vseq:--1}" -lt "$min_seq" ]; then
		CHECK_ERR="restored chain ends at seq $vseq, but seq $min_seq was acked before the crash"
		return 1
	fi
	return 0
}
