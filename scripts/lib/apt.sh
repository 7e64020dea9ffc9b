# shellcheck shell=bash
# Private apt configuration for slsvirt: adds bookworm-backports (binary) and
# deb-src for bookworm, bookworm-backports and trixie, using the mirror URI
# that this machine's own apt sources already name. The machine's apt setup
# is never modified: sources and lists live under $SLS_CACHE/apt.

sls_apt_mirror() {
	# The first URI whose stanza/line carries a plain "bookworm" suite.
	local uri
	uri=$(awk '
		/^[[:space:]]*#/ { next }
		/^URIs:/ { u = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print u; exit } }
		/^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) == "bookworm") { print $i; exit } } }
	' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1)
	[ -n "$uri" ] || { echo "slsvirt: cannot find a Debian bookworm mirror in this machine's apt sources" >&2; return 1; }
	echo "${uri%/}"
}

sls_apt_setup() {
	local dir="$SLS_CACHE/apt" mirror sec
	mkdir -p "$dir/lists/partial" "$dir/archives/partial"
	mirror=$(sls_apt_mirror) || return 1
	{
		echo "deb $mirror bookworm main"
		echo "deb $mirror bookworm-updates main"
		echo "deb $mirror bookworm-backports main"
		echo "deb-src $mirror bookworm main"
		echo "deb-src $mirror bookworm-backports main"
		echo "deb-src $mirror trixie main"
	} > "$dir/sources.list.new"
	# Keep security updates the machine already uses.
	sec=$(awk '/^URIs:/ { u = $2 } /^Suites:/ && /bookworm-security/ { print u; exit }' \
		/etc/apt/sources.list.d/*.sources 2>/dev/null)
	[ -n "$sec" ] && echo "deb ${sec%/} bookworm-security main" >> "$dir/sources.list.new"
	if ! cmp -s "$dir/sources.list.new" "$dir/sources.list" || [ ! -e "$dir/updated" ] ||
	   [ -n "$(find "$dir/updated" -mmin +720)" ]; then
		mv "$dir/sources.list.new" "$dir/sources.list"
		sls_apt update -q || return 1
		touch "$dir/updated"
	else
		rm -f "$dir/sources.list.new"
	fi
}

sls_apt() {
	local dir="$SLS_CACHE/apt"
	DEBIAN_FRONTEND=noninteractive apt-get \
		-o Dir::Etc::sourcelist="$dir/sources.list" \
		-o Dir::Etc::sourceparts=- \
		-o Dir::State::Lists="$dir/lists" \
		-o APT::Get::List-Cleanup=0 \
		-o Acquire::Retries=3 "$@"
}

# sls_apt_fetch_orig DIR PKG=VERSION ORIG SHA256: downloads the source package
# PKG=VERSION into DIR (unless ORIG there already matches) and checks the
# orig tarball ORIG against SHA256. Judged by the tarball alone: for
# backports the .dsc and debian.tar.xz may 404 while the orig downloads.
sls_apt_fetch_orig() {
	local dir=$1 spec=$2 orig="$1/$3" sha=$4
	mkdir -p "$dir"
	if [ ! -f "$orig" ] || ! echo "$sha  $orig" | sha256sum -c --quiet - 2>/dev/null; then
		rm -f "$orig"
		echo "slsvirt: fetching Debian's source $spec"
		(cd "$dir" && sls_apt source --download-only "$spec") >"$dir/fetch.log" 2>&1 || true
	fi
	echo "$sha  $orig" | sha256sum -c --quiet - 2>/dev/null || {
		tail -n 20 "$dir/fetch.log" >&2 2>/dev/null
		echo "slsvirt: could not download $orig for $spec (or it does not match its pinned sha256)" >&2
		return 1
	}
}
