# shellcheck shell=bash
# Build virsh with the sls-* commands: libvirt's source (the same version as
# Debian's installed libvirt packages, scripts/versions.sh) + libvirt/ (new
# files in libvirt/files, changes in libvirt/patches), configured with every
# driver but the remote client off, and only the virsh target built, linked
# against Debian's installed libvirt.so.0 (patch 0002: virsh uses libvirt's
# private symbols, versioned with the release, so source and packages must be
# the same version). The binary is kept in $SLS_CACHE/virsh/<key>, key = hash
# of the source version, the configure line and libvirt/files + patches, so
# an unchanged tree is reused at once; build/libvirt/virsh is a copy.
# Needs: SLS_CACHE, SLS_ROOT (repo), scripts/versions.sh, scripts/lib/apt.sh.

SLS_VIRSH_CONFIGURE=(--buildtype=plain -Dc_args=-O2 -Dwerror=false
	-Ddocs=disabled -Dtests=disabled -Dnls=disabled -Ddriver_libvirtd=disabled
	-Ddriver_qemu=disabled -Ddriver_lxc=disabled -Ddriver_ch=disabled
	-Ddriver_libxl=disabled -Ddriver_bhyve=disabled -Ddriver_esx=disabled
	-Ddriver_hyperv=disabled -Ddriver_vbox=disabled -Ddriver_vmware=disabled
	-Ddriver_vz=disabled -Ddriver_openvz=disabled -Ddriver_test=disabled
	-Ddriver_network=disabled -Ddriver_interface=disabled -Ddriver_secrets=disabled
	-Ddriver_remote=enabled -Dreadline=enabled -Dinit_script=none
	-Dapparmor=disabled -Dselinux=disabled -Dsasl=disabled -Dpolkit=disabled
	-Dstorage_dir=disabled -Dstorage_fs=disabled -Dstorage_lvm=disabled
	-Dstorage_iscsi=disabled -Dstorage_iscsi_direct=disabled -Dstorage_mpath=disabled
	-Dstorage_disk=disabled -Dstorage_rbd=disabled -Dstorage_scsi=disabled
	-Dstorage_gluster=disabled -Dstorage_zfs=disabled -Dstorage_vstorage=disabled
	-Dlibssh=disabled -Dlibssh2=disabled -Dudev=disabled -Dfirewalld=disabled
	-Dnumactl=disabled -Dwireshark_dissector=disabled -Dbash_completion=disabled)

sls_virsh_key() {
	{
		echo "$SLS_LIBVIRT_PKG_VERSION $SLS_LIBVIRT_ORIG_SHA256"
		echo "${SLS_VIRSH_CONFIGURE[*]}"
		(cd "$SLS_ROOT" && find libvirt/files libvirt/patches -type f -print0 | sort -z | xargs -0 sha256sum)
	} | sha256sum | cut -c1-16
}

sls_virsh_fetch() {
	sls_apt_fetch_orig "$SLS_CACHE/src/libvirt" "libvirt=$SLS_LIBVIRT_PKG_VERSION" "$SLS_LIBVIRT_ORIG" \
		"$SLS_LIBVIRT_ORIG_SHA256"
}

sls_virsh_build() {
	local key dir work src p out lib
	key=$(sls_virsh_key)
	dir="$SLS_CACHE/virsh/$key"
	# libvirt bakes its absolute source and build paths into every object
	# (-Dabs_top_srcdir=...): build in one fixed place so ccache hits
	# whatever the key, and keep only the binary per key.
	work="$SLS_CACHE/virsh/work"
	src="$work/$SLS_LIBVIRT_DIR"
	if [ ! -f "$dir/.done" ]; then
		sls_virsh_fetch || return 1
		echo "slsvirt: building virsh (cache key $key) in $work"
		exec 9>"$SLS_CACHE/virsh.lock"
		flock 9
		rm -rf "$work" "$dir"
		mkdir -p "$work" "$dir"
		tar -C "$work" -xf "$SLS_CACHE/src/libvirt/$SLS_LIBVIRT_ORIG" || return 1
		cp -r "$SLS_ROOT/libvirt/files/." "$src/"
		sls_apply_series "$src" "$SLS_ROOT/libvirt/patches" || return 1
		(
			cd "$src" &&
			"$SLS_MESON" setup build "${SLS_VIRSH_CONFIGURE[@]}" >"$work/configure.log" 2>&1 || {
				tail -n 30 "$work/configure.log" >&2; exit 1; }
			ninja -C build -j "$SLS_JOBS" tools/virsh >"$work/build.log" 2>&1 || {
				grep -E 'error|FAILED' "$work/build.log" | head -n 40 >&2; exit 1; }
		) || { echo "slsvirt: virsh build failed (logs in $work)" >&2; return 1; }
		cp "$src/build/tools/virsh" "$dir/virsh"
		touch "$dir/.done"
		flock -u 9
		ls -1dt "$SLS_CACHE"/virsh/*/.done 2>/dev/null | tail -n +7 | xargs -r -n1 dirname | xargs -r rm -rf
	else
		echo "slsvirt: virsh up to date (cache key $key)"
	fi
	out="$SLS_ROOT/build/libvirt"
	mkdir -p "$out"
	cp "$dir/virsh" "$out/virsh.new" && mv "$out/virsh.new" "$out/virsh"
	# It must run on Debian's libraries (patch 0002 links against them).
	local libs
	libs=$(ldd "$out/virsh") || { echo "slsvirt: ldd build/libvirt/virsh failed" >&2; return 1; }
	for lib in libvirt.so.0 libvirt-qemu.so.0; do
		grep -Eq "$lib => (/usr)?/lib/" <<<"$libs" || {
			echo "slsvirt: build/libvirt/virsh does not load Debian's $lib:" >&2
			echo "$libs" >&2
			return 1
		}
	done
	"$out/virsh" --version >/dev/null || { echo "slsvirt: build/libvirt/virsh does not run" >&2; return 1; }
	# The <emulator> of slsvirt domains: our QEMU plus the hook's device arguments.
	ln -sfn "$SLS_ROOT/libvirt/slsvirt-qemu" "$SLS_ROOT/build/qemu/slsvirt-qemu"
}
