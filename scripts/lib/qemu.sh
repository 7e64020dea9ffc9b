# shellcheck shell=bash
# Build our QEMU: Debian's QEMU source + qemu-plugin/ (drop-in files and a
# patch series) + the contract headers, as a lean x86_64-softmmu build.
# The build lives in $SLS_CACHE/qemu/<key>, key = hash of the source version,
# the configure line and every input file we add, so an unchanged tree is
# reused at once and a changed one is rebuilt (ccache keeps that quick).
# Needs: SLS_CACHE, SLS_ROOT (repo), scripts/versions.sh, scripts/lib/apt.sh.

SLS_QEMU_CONFIGURE=(--python=/usr/bin/python3 --target-list=x86_64-softmmu
	--without-default-features --disable-install-blobs --disable-docs
	--disable-werror --enable-kvm --disable-user --disable-download
	--enable-fdt=system
	--enable-linux-aio --enable-linux-io-uring)  # stock disks' best aio= (bench/run persist)
SLS_QEMU_TARGETS=(qemu-system-x86_64 tests/qtest/slsvirt-pci-test)

sls_qemu_key() {
	{
		echo "$SLS_QEMU_SRC_VERSION $SLS_QEMU_ORIG_SHA256"
		echo "${SLS_QEMU_CONFIGURE[*]} ${SLS_QEMU_TARGETS[*]}"
		(cd "$SLS_ROOT" && find qemu-plugin/files qemu-plugin/patches include/slsvirt \
			-type f -print0 | sort -z | xargs -0 sha256sum)
	} | sha256sum | cut -c1-16
}

sls_qemu_fetch() {
	sls_apt_fetch_orig "$SLS_CACHE/src/qemu" "qemu=$SLS_QEMU_SRC_VERSION" "$SLS_QEMU_ORIG" "$SLS_QEMU_ORIG_SHA256"
}

# The +ds source ships no firmware: link Debian's seabios and qemu-system-data
# files into the build's data dir, so our QEMU (and its qtests) find them
# without -L.
sls_qemu_firmware() {
	local datadir=$1 f
	mkdir -p "$datadir"
	for f in /usr/share/seabios/*.bin /usr/share/qemu/*.bin /usr/share/qemu/*.rom; do
		[ -e "$f" ] && ln -sfn "$f" "$datadir/${f##*/}"
	done
	[ -e "$datadir/bios-256k.bin" ] || {
		echo "slsvirt: no bios-256k.bin (is Debian's seabios installed?)" >&2
		return 1
	}
}

sls_qemu_build() {
	local key dir src p
	key=$(sls_qemu_key)
	dir="$SLS_CACHE/qemu/$key"
	src="$dir/$SLS_QEMU_DIR"
	if [ ! -f "$dir/.done" ]; then
		sls_qemu_fetch || return 1
		echo "slsvirt: building QEMU (cache key $key) in $dir"
		rm -rf "$dir"
		mkdir -p "$dir"
		tar -C "$dir" -xf "$SLS_CACHE/src/qemu/$SLS_QEMU_ORIG" || return 1
		cp -r "$SLS_ROOT/qemu-plugin/files/." "$src/"
		mkdir -p "$src/include/slsvirt"
		cp "$SLS_ROOT"/include/slsvirt/*.h "$src/include/slsvirt/"
		sls_apply_series "$src" "$SLS_ROOT/qemu-plugin/patches" || return 1
		mkdir -p "$src/build"
		(
			cd "$src/build" &&
			# Every key builds in its own tree: make ccache hash paths
			# relative to it so a rebuilt key hits the previous key's objects.
			export PATH="/usr/lib/ccache:$PATH" CCACHE_DIR="$SLS_CACHE/ccache" \
				CCACHE_BASEDIR="$src" CCACHE_NOHASHDIR=1 &&
			../configure "${SLS_QEMU_CONFIGURE[@]}" >configure.log 2>&1 || {
				tail -n 30 configure.log >&2; exit 1; }
			ninja "${SLS_QEMU_TARGETS[@]}" >build.log 2>&1 || {
				grep -E 'error|FAILED' build.log | head -n 40 >&2; exit 1; }
		) || { echo "slsvirt: QEMU build failed (logs in $src/build)" >&2; return 1; }
		touch "$dir/.done"
		# Keep the twelve most recently used builds (branches built side by
		# side each have their own key; 686 MB each), and every build used
		# in the last three hours: a test run that set up minutes ago still
		# execs its QEMU. Older keys are dead weight.
		ls -1dt "$SLS_CACHE"/qemu/*/ 2>/dev/null | tail -n +13 | while read -r p; do
			[ -n "$(find "$p" -maxdepth 0 -mmin -180)" ] || rm -rf "$p"
		done
	else
		echo "slsvirt: QEMU up to date (cache key $key)"
		touch "$dir"  # recently used: the eviction above keeps it
	fi
	sls_qemu_firmware "$src/build/qemu-bundle/usr/local/share/qemu"
	mkdir -p "$SLS_ROOT/build/qemu"
	ln -sfn "$src/build/qemu-system-x86_64" "$SLS_ROOT/build/qemu/qemu-system-x86_64"
	ln -sfn "$src/build/tests/qtest/slsvirt-pci-test" "$SLS_ROOT/build/qemu/slsvirt-pci-test"
	ln -sfn "$src" "$SLS_ROOT/build/qemu/src"
}
