/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * slsvirt guest uAPI: ioctls on /dev/slsvirt.
 *
 * Rules (see docs/architecture.md): fixed-width fields, user pointers as
 * __u64, every struct has a flags field and reserved space that must be
 * zero (non-zero is rejected with -EINVAL), unknown commands get -ENOTTY.
 * A new behaviour is a new command number, never a version field.
 */
#ifndef _UAPI_LINUX_SLSVIRT_H
#define _UAPI_LINUX_SLSVIRT_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define SLSVIRT_DEV_NAME	"slsvirt"
#define SLSVIRT_IOC_MAGIC	0xB7	/* unused in ioctl-number.rst */

/*
 * SLSVIRT_IOC_GET_INFO: describe the device and the checkpoint state.
 * in:  flags and reserved must be zero.
 * out: everything else.
 */
struct slsvirt_info {
	__u32 flags;		/* in: must be 0 */
	__u32 dev_version;	/* out: SLSVIRT_HW_VERSION of the device */
	__u32 proto_version;	/* out: SLSVIRT_API_VERSION the driver speaks */
	__u32 host_status;	/* out: SLSVIRT_INFO_* bits */
	__u64 durable_epoch;	/* out: newest epoch the host made durable, 0 = none */
	__u64 current_epoch;	/* out: epoch the next checkpoint will carry */
	__u64 reserved[4];	/* in: must be 0 */
};

#define SLSVIRT_API_VERSION		1

/* host_status bits */
#define SLSVIRT_INFO_CHECKPOINTING	(1u << 0)	/* host store attached */

/*
 * SLSVIRT_IOC_PERSIST: durability barrier. Returns once every guest memory
 * write made before the call is part of a durable checkpoint; @epoch is that
 * checkpoint. Blocks interruptibly (-ERESTARTSYS on a signal).
 * Errors: -EIO if the host is not checkpointing or the checkpoint failed,
 * -EINVAL for non-zero flags/reserved, -EFAULT for a bad pointer.
 */
struct slsvirt_persist {
	__u32 flags;		/* in: must be 0 (no flags defined yet) */
	__u32 reserved0;	/* in: must be 0 */
	__u64 epoch;		/* out: durable epoch that covers the caller's writes */
	__u64 reserved[4];	/* in: must be 0 */
};

#define SLSVIRT_IOC_GET_INFO	_IOWR(SLSVIRT_IOC_MAGIC, 0x00, struct slsvirt_info)
#define SLSVIRT_IOC_PERSIST	_IOWR(SLSVIRT_IOC_MAGIC, 0x01, struct slsvirt_persist)

#endif /* _UAPI_LINUX_SLSVIRT_H */
