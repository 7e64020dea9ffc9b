# shellcheck shell=bash
# Pinned versions of every foreign tree slsvirt builds against. Changing a
# line here changes the cache keys, so the next setup rebuilds what depends on it.

# QEMU: Debian's source package (trixie), upstream orig tarball.
SLS_QEMU_SRC_VERSION="1:10.0.13+ds-0+deb13u1"
SLS_QEMU_ORIG="qemu_10.0.13+ds.orig.tar.xz"
SLS_QEMU_ORIG_SHA256="6a0888e806c2ffc0c5f0733e974f9aea55491950d3c47c98669c8b236dde59ae"
SLS_QEMU_DIR="qemu-10.0.13"

# Guest (and future KVM-module) kernel: Debian's 6.12 from bookworm-backports.
SLS_KVER="6.12.95+deb12-amd64"
SLS_KPKG_VERSION="6.12.95-1~bpo12+1"

# libvirt: Debian's packages from bookworm-backports (installed by setup), and
# the same version's source, from which only virsh is rebuilt with the
# virsh sls-* commands (libvirt/patches, scripts/lib/virsh.sh).
SLS_LIBVIRT_PKG_VERSION="11.3.0-2~bpo12+1"
SLS_LIBVIRT_ORIG="libvirt_11.3.0.orig.tar.xz"
SLS_LIBVIRT_ORIG_SHA256="6bcb0c42c4580436fea262ced56f68a6afe20f7390b1bea2116718cc034a0283"
SLS_LIBVIRT_DIR="libvirt-11.3.0"
# libvirt's QEMU driver package depends on a qemu-system-x86 (never run by slsvirt).
SLS_LIBVIRT_QEMU_PKG_VERSION="1:10.0.2+ds-2+deb13u1~bpo12+1"

# Linux source the KVM patches (kvm-patches/) apply to: the same Debian
# package version as the kernel above, upstream orig tarball.
SLS_LINUX_ORIG="linux_6.12.95.orig.tar.xz"
SLS_LINUX_ORIG_SHA256="82ee332c20307c8e75b59c2779f3d554c592f5efa454bacf1e58daced5199f89"
SLS_LINUX_DIR="linux-6.12.95"
