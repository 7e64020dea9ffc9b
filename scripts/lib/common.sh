# shellcheck shell=bash
# Helpers shared by scripts/setup, scripts/test and friends. Source it; it
# defines functions and a few variables and runs nothing else.
#
#   SLS_ROOT   the repository root (absolute)
#   SLS_CACHE  foreign-tree builds, apt state, ccache (default /var/cache/slsvirt)
#   SLS_BUILD  the repo's gitignored build dir ($SLS_ROOT/build)
#   SLS_JOBS   parallel build jobs (default: nproc, at most 2 on this machine kind)

SLS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
: "${SLS_CACHE:=/var/cache/slsvirt}"
SLS_BUILD="$SLS_ROOT/build"
if [ -z "${SLS_JOBS:-}" ]; then
	SLS_JOBS=$(nproc 2>/dev/null || echo 2)
	[ "$SLS_JOBS" -gt 2 ] 2>/dev/null && SLS_JOBS=2
fi
# Debian's tools, not whatever another toolchain manager put first on PATH
# (a pyenv python there has no meson and no pycotap).
: "${SLS_MESON:=/usr/bin/meson}"
: "${SLS_PYTHON:=/usr/bin/python3}"
# One ccache for QEMU and our own meson build (meson picks ccache up by itself).
export CCACHE_DIR="${CCACHE_DIR:-$SLS_CACHE/ccache}"
export SLS_ROOT SLS_CACHE SLS_BUILD SLS_JOBS SLS_MESON SLS_PYTHON

sls_log() { printf 'slsvirt: %s\n' "$*" >&2; }
sls_die() { printf 'slsvirt: error: %s\n' "$*" >&2; exit 1; }

# Monotonic seconds with millisecond resolution.
sls_now() { awk '{ printf "%.3f\n", $1 }' /proc/uptime; }
sls_elapsed() { awk -v a="$1" -v b="$(sls_now)" 'BEGIN { printf "%.1f", b - a }'; }

# sls_stamp_matches FILE KEY: true when FILE holds exactly KEY.
# sls_stamp_write FILE KEY:   record KEY once the step it guards succeeded.
sls_stamp_matches() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
sls_stamp_write() { mkdir -p "$(dirname "$1")" && printf '%s\n' "$2" > "$1.tmp" && mv "$1.tmp" "$1"; }

# Is Debian package $1 installed? With $2 ">=V" or "=V", also checks its version.
sls_pkg_ok() {
	local pkg=$1 want=${2:-} st ver
	st=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$pkg" 2>/dev/null) || return 1
	case $st in ii*) ;; *) return 1 ;; esac
	ver=${st#* }; ver=${ver# }
	case $want in
	'') return 0 ;;
	'>='*) dpkg --compare-versions "$ver" ge "${want#>=}" ;;
	'='*) [ "$ver" = "${want#=}" ] ;;
	*) return 1 ;;
	esac
}

# sls_apply_series SRC PATCHDIR: applies PATCHDIR's patches to the tree SRC
# in the order PATCHDIR/series lists them (blank lines and # comments skipped).
sls_apply_series() {
	local src=$1 dir=$2 p
	while read -r p; do
		case "$p" in ''|'#'*) continue ;; esac
		patch -d "$src" -p1 --batch --forward -s < "$dir/$p" || {
			echo "slsvirt: patch $p does not apply" >&2
			return 1
		}
	done < "$dir/series"
}
