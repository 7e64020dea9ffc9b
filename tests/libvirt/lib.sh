# shellcheck shell=bash
# Helpers for the libvirt suite (and bench/run libvirt): a private libvirtd
# with slsvirt's hook, driven by our rebuilt virsh. Source after
# `set -euo pipefail`, then call libvirt_enter_namespace "$@" first thing.
#
# libvirtd as root keeps its state at fixed paths (/etc/libvirt,
# /run/libvirt, /var/lib/libvirt, ...; hooks only in /etc/libvirt/hooks), so
# the test runs in a private mount namespace with a temp dir bind-mounted
# over each of them and over slsvirt's /run/slsvirt and /var/lib/slsvirt: it
# never sees or touches a system libvirtd, and the defaults a user gets are
# the paths under test. virtlogd and libvirtd run in the foreground as
# children of the test (no systemd here) and are stopped on exit, with
# every QEMU they started and every slsvirtd the hook started.
# shellcheck source=../integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"

VIRSH=${SLSVIRT_VIRSH:-$SLSVIRT_BUILD_ROOT/libvirt/virsh}
SLSVIRT_QEMU_WRAPPER=$SLSVIRT_BUILD_ROOT/qemu/slsvirt-qemu
LIBVIRT_PKG_VERSION=$(. "$SLSVIRT_ROOT/scripts/versions.sh" && echo "$SLS_LIBVIRT_PKG_VERSION")
LIBVIRT_DIRS=(/etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
	/run/slsvirt /var/lib/slsvirt)
LIBVIRTD_PID=
VIRTLOGD_PID=
export LIBVIRT_DEFAULT_URI=qemu:///system

# Re-runs the calling script in its own mount namespace (once).
libvirt_enter_namespace() {
	[ "${SLSVIRT_LIBVIRT_NS:-}" = 1 ] && return 0
	[ "$(id -u)" = 0 ] || fail "the libvirt suite runs libvirtd as root (QEMU as root): run it as root"
	command -v unshare >/dev/null || fail "prerequisite missing: unshare (util-linux)"
	SLSVIRT_LIBVIRT_NS=1 exec unshare --mount --propagation private "$0" "$@"
}

need_libvirt() {
	local p v
	for p in libvirt0 libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-log; do
		v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null) ||
			fail "prerequisite missing: Debian package $p (scripts/setup apt)"
		[ "$v" = "$LIBVIRT_PKG_VERSION" ] ||
			fail "prerequisite: $p is $v, slsvirt's virsh is built for $LIBVIRT_PKG_VERSION (scripts/setup)"
	done
	[ -x /usr/sbin/libvirtd ] && [ -x /usr/sbin/virtlogd ] ||
		fail "prerequisite missing: /usr/sbin/libvirtd or /usr/sbin/virtlogd"
	[ -x "$VIRSH" ] || fail "prerequisite missing: $VIRSH (scripts/setup virsh builds it)"
	"$VIRSH" help sls-checkpoint >/dev/null 2>&1 || fail "$VIRSH has no sls-checkpoint command"
	[ -x "$SLSVIRT_QEMU_WRAPPER" ] || fail "prerequisite missing: $SLSVIRT_QEMU_WRAPPER (scripts/setup virsh)"
}

libvirt_cleanup() {
	local f pid
	# Domains first (libvirtd may be gone already), then the daemons.
	for f in /run/libvirt/qemu/*.pid /run/slsvirt/libvirt/hostd-*/slsvirtd.pid; do
		[ -f "$f" ] || continue
		[ "${f##*/}" = driver.pid ] && continue  # libvirtd's own lock file
		pid=$(cat "$f" 2>/dev/null) || continue
		[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
	done
	for pid in $LIBVIRTD_PID $VIRTLOGD_PID; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $LIBVIRTD_PID $VIRTLOGD_PID; do
		wait "$pid" 2>/dev/null || true
	done
	LIBVIRTD_PID= VIRTLOGD_PID=
}

# Prints the private libvirtd's log tail (a failing test's context).
libvirt_logs() {
	echo "---- libvirtd log (tail) ----"
	tail -n 40 /var/log/libvirt/libvirtd.log 2>/dev/null || true
	for f in /var/log/libvirt/qemu/*.log; do
		[ -f "$f" ] || continue
		echo "---- $f (tail) ----"
		tail -n 20 "$f"
	done
	for f in /run/slsvirt/libvirt/hostd-*/slsvirtd.log; do
		[ -f "$f" ] || continue
		echo "---- $f (tail) ----"
		tail -n 20 "$f"
	done
}

# Private dirs, slsvirt's hook, virtlogd + libvirtd; waits until virsh answers.
setup_libvirt() {
	need_qemu
	need_hostd
	need_slsctl
	need_image
	need_libvirt
	[ "${SLSVIRT_LIBVIRT_NS:-}" = 1 ] || fail "setup_libvirt: call libvirt_enter_namespace \"\$@\" first"
	make_tmp
	trap 'rc=$?; [ $rc = 0 ] || libvirt_logs; libvirt_cleanup; (exit $rc); cleanup' EXIT
	local d p
	# The machine's configuration files (not its hooks) under ours.
	mkdir -p "$TMP/ns/etc"
	cp -a /etc/libvirt "$TMP/ns/etc/libvirt" 2>/dev/null || mkdir -p "$TMP/ns/etc/libvirt"
	rm -rf "$TMP/ns/etc/libvirt/hooks"
	for d in "${LIBVIRT_DIRS[@]}"; do
		p=$TMP/ns$d
		mkdir -p "$p" "$d"
		mount --bind "$p" "$d" || fail "cannot bind-mount $p over $d"
	done
	cat > /etc/libvirt/libvirtd.conf <<-CONF
		unix_sock_rw_perms = "0700"
		auth_unix_rw = "none"
		log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
	CONF
	cat > /etc/libvirt/qemu.conf <<-CONF
		user = "root"
		group = "root"
		dynamic_ownership = 0
		remember_owner = 0
		security_driver = "none"
		namespaces = [ ]
		cgroup_controllers = [ ]
	CONF
	echo 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"' > /etc/libvirt/virtlogd.conf
	mkdir -p /etc/libvirt/qemu /var/log/libvirt/qemu
	"$SLSVIRT_ROOT/libvirt/install-hook" --etc /etc/libvirt --slsctl "$SLSCTL" >/dev/null ||
		fail "libvirt/install-hook failed"
	unset SLSVIRT_RUN_DIR SLSVIRT_STORE_ROOT  # the hook and slsctl see the defaults, private here
	export SLSVIRT_SLSCTL=$SLSCTL              # virsh sls-list / sls-info read the store with it

	/usr/sbin/virtlogd </dev/null >"$TMP/virtlogd.out" 2>&1 &
	VIRTLOGD_PID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		[ -S /run/libvirt/virtlogd-sock ] && break
		kill -0 "$VIRTLOGD_PID" 2>/dev/null || { cat "$TMP/virtlogd.out" >&2; fail "virtlogd exited"; }
		sleep 0.1
	done
	[ -S /run/libvirt/virtlogd-sock ] || fail "virtlogd did not create its socket within 10 s"
	/usr/sbin/libvirtd </dev/null >"$TMP/libvirtd.out" 2>&1 &
	LIBVIRTD_PID=$!
	for ((i = 0; i < 300; i++)); do
		"$VIRSH" -q version >/dev/null 2>&1 && break
		kill -0 "$LIBVIRTD_PID" 2>/dev/null || { cat "$TMP/libvirtd.out" >&2; fail "libvirtd exited"; }
		sleep 0.1
	done
	"$VIRSH" -q version >/dev/null 2>&1 || fail "libvirtd did not answer virsh within 30 s"
	log "private libvirtd $(/usr/sbin/libvirtd --version | awk '{print $NF}') up (pid $LIBVIRTD_PID)"
}

# example_domain NAME [SED-EXPR...]: the documented example domain
# (libvirt/example-domain.xml) with this checkout's paths and name NAME.
example_domain() {
	local name=$1 e args=()
	shift
	for e in "$@"; do args+=(-e "$e"); done
	sed -e "s|/path/to/slsvirt|$SLSVIRT_ROOT|g" \
		-e "s|<name>slsdemo</name>|<name>$name</name>|" \
		-e "s|qemu/slsdemo.console|qemu/$name.console|" \
		${args[@]+"${args[@]}"} "$SLSVIRT_ROOT/libvirt/example-domain.xml"
}

# The QEMU pid of running domain NAME.
domain_pid() {
	cat "/run/libvirt/qemu/$1.pid" 2>/dev/null || fail "no pid file for domain $1"
}
