/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * slsvirt guest uAPI: ioctls on /dev/slsvirt.
 *
 * Rules (see docs/architecture.md): fixed-width fields, user pointers as
 * __u64, every struct has a flags field and reserved space that must be
 * zero (non-zero is rejected with -EINVAL), unknown commands get -ENOTTY.
 * A new behaviour is a new command number, never a version field.
 * Unknown flag bits are rejected with -EINVAL, so a program can tell an old
 * driver (no SLSVIRT_PERSIST_ASYNC, -EINVAL) and an old ioctl set
 * (no SLSVIRT_IOC_GET_EPOCH, -ENOTTY) from a new one.
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
 * SLSVIRT_IOC_PERSIST: durability barrier for every guest memory write made
 * before the call (by any thread or process of the guest).
 *
 * flags == 0 (synchronous): returns once those writes are part of a durable
 * checkpoint; @epoch is the newest durable epoch at that moment (>= the
 * ticket below). Blocks interruptibly (-ERESTARTSYS on a signal: nothing is
 * lost, call again).
 *
 * flags == SLSVIRT_PERSIST_ASYNC: returns at once with @epoch = the ticket,
 * i.e. the epoch that will cover the writes. The writes are durable once
 * durable_epoch >= ticket (SLSVIRT_IOC_GET_EPOCH). The ticket is queued on
 * this open file; its completion is delivered by read() and poll() on the
 * same file (see "Completions" below). At most SLSVIRT_ASYNC_MAX tickets may
 * be queued per open file; one more fails with -EBUSY until read() has
 * consumed a completion.
 *
 * Coalescing: callers share epochs. A ticket is the epoch the device will
 * capture next; while one capture is in flight, every request joins the one
 * after it. N concurrent callers cost one epoch, and a caller waits for at
 * most two epochs (the one in flight and its own).
 *
 * Errors (both modes; the asynchronous ones without queuing a ticket):
 *   -EIO     the host is not checkpointing (no store attached): at once, no
 *            wait; or (sync) the epoch failed on the host
 *   -ENODEV  the device was removed (unbound); also for waiters woken by it
 *   -EBUSY   (async) SLSVIRT_ASYNC_MAX tickets already queued on this file
 *   -EINVAL  unknown flag bits, or non-zero reserved fields
 *   -EFAULT  bad pointer (checked before anything is requested)
 */
struct slsvirt_persist {
	__u32 flags;		/* in: 0 or SLSVIRT_PERSIST_ASYNC */
	__u32 reserved0;	/* in: must be 0 */
	__u64 epoch;		/* out: sync: durable epoch covering the caller's writes;
				 *      async: the ticket */
	__u64 reserved[4];	/* in: must be 0 */
};

/* slsvirt_persist.flags */
#define SLSVIRT_PERSIST_ASYNC	(1u << 0)	/* return a ticket, complete via read()/poll() */

#define SLSVIRT_ASYNC_MAX	64	/* tickets queued per open file */

/*
 * Completions of asynchronous PERSISTs: read() on /dev/slsvirt.
 *
 * Every successful SLSVIRT_PERSIST_ASYNC queues exactly one ticket on its
 * open file, and produces exactly one struct slsvirt_completion, delivered
 * in the order the tickets were issued (tickets never decrease, so records
 * arrive in ticket order; several requests in one epoch give several
 * records with the same ticket). A record is ready when its ticket settled:
 *   status 0        durable_epoch >= ticket: the writes are durable
 *   status -EIO     the epoch failed on the host (failed_epoch >= ticket
 *                   while durable_epoch < ticket); call PERSIST again
 *   status -ENODEV  the device was removed before the ticket settled
 * @epoch is the newest durable epoch when the record was produced (so
 * @epoch >= @ticket exactly when @status is 0).
 *
 * read(fd, buf, count): count must be at least sizeof(struct
 * slsvirt_completion) (else -EINVAL); returns as many whole ready records as
 * fit, at least one. With no record ready it blocks interruptibly until the
 * oldest queued ticket settles (-EAGAIN with O_NONBLOCK, -ERESTARTSYS on a
 * signal; the tickets stay queued). With no ticket queued at all it fails
 * with -ENOMSG at once rather than wait for nothing; after the device is
 * removed and the queue is drained, with -ENODEV. Concurrent readers of one
 * file each get distinct records. write() is not supported.
 *
 * poll()/select()/epoll on the same file:
 *   POLLIN | POLLRDNORM  at least one record is ready (read() won't block)
 *   POLLERR              the device was removed: queued tickets complete
 *                        with -ENODEV, new requests fail; close the file
 * POLLOUT is never reported. Each open file has its own queue, so an event
 * loop can wait on many files (many tickets each) in one poll().
 */
struct slsvirt_completion {
	__u64 ticket;		/* the epoch SLSVIRT_PERSIST_ASYNC returned */
	__u64 epoch;		/* newest durable epoch when the ticket settled */
	__s32 status;		/* 0, -EIO or -ENODEV (see above) */
	__u32 reserved;		/* 0 */
};

/*
 * SLSVIRT_IOC_GET_EPOCH: where checkpointing stands, read from the device.
 * in:  flags and reserved must be zero (-EINVAL otherwise).
 * out: the rest. current_epoch is read first: a PERSIST issued after this
 * call gets a ticket >= current_epoch. While a VM runs, the host keeps one
 * capture in flight at most, so current_epoch - max(durable_epoch,
 * failed_epoch) is 1 or 2 once the first epoch settled.
 * Errors: -ENODEV after removal, -EFAULT.
 */
struct slsvirt_epoch_info {
	__u32 flags;		/* in: must be 0 */
	__u32 host_status;	/* out: SLSVIRT_INFO_* bits */
	__u64 current_epoch;	/* out: epoch the next capture will carry */
	__u64 durable_epoch;	/* out: newest durable epoch, 0 = none */
	__u64 failed_epoch;	/* out: newest epoch that failed, 0 = none */
	__u64 reserved[4];	/* in: must be 0 */
};

/*
 * Elastic memory (devices with memory elasticity; otherwise mmap() and the
 * SLSVIRT_IOC_MEM_* ioctls fail with -EOPNOTSUPP).
 *
 * mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) on /dev/slsvirt
 * maps an elastic region: ordinary guest memory, zero-filled, populated on
 * first touch. len is at most the guest's RAM; the offset must be 0;
 * MAP_PRIVATE is refused (-EINVAL). The region is not inherited by fork()
 * children and cannot be split (a partial munmap()/mprotect() fails with
 * -EINVAL); munmap() of the whole region is always allowed, also while parts
 * of it are released.
 *
 * SLSVIRT_IOC_MEM_RELEASE gives the pages of [addr, addr + len) back to the
 * host (its memory for them is freed at once); SLSVIRT_IOC_MEM_RECLAIM takes
 * them back. Between the two, touching the range raises SIGBUS. After
 * RECLAIM the range reads as zero. Both work in page order from addr and in
 * batches: @done is how many bytes from addr are in the requested state when
 * the call returns (= len on success; on an error, a prefix may have been
 * applied).
 * Errors:
 *   -EINVAL  flags/reserved non-zero; addr or len not page aligned, len 0,
 *            the range not wholly inside one elastic region; RELEASE of a
 *            range any page of which is already released, RECLAIM of one
 *            any page of which is not released (nothing applied)
 *   -ENOSPC  RECLAIM: the host's ceiling does not allow this much memory in
 *            use (the rest of the range stays released)
 *   -EBUSY   RELEASE: the host cannot free memory now
 *   -ENODEV  the device was removed; -EFAULT bad pointer
 */
struct slsvirt_mem_range {
	__u64 addr;		/* in: start, page aligned, in an elastic region */
	__u64 len;		/* in: bytes, page aligned, > 0 */
	__u32 flags;		/* in: must be 0 */
	__u32 reserved0;	/* in: must be 0 */
	__u64 done;		/* out: bytes from addr now in the requested state */
	__u64 reserved[2];	/* in: must be 0 */
};

/*
 * SLSVIRT_IOC_MEM_INFO: memory elasticity as the device and the driver see
 * it. Sizes in bytes. in: flags and reserved must be zero.
 */
struct slsvirt_mem_info {
	__u32 flags;		/* in: must be 0 */
	__u32 reserved0;	/* in: must be 0 */
	__u64 ram;		/* out: the guest's main RAM (device) */
	__u64 released;		/* out: released to the host now (device) */
	__u64 target_released;	/* out: how much the host asks to be released */
	__u64 ceiling;		/* out: most RAM the host lets the guest use */
	__u64 driver_released;	/* out: released by the driver to follow the target */
	__u64 region_released;	/* out: given to the host from elastic regions (touched
				 * pages only: untouched ones cost the host nothing) */
	__u64 shrinker_reclaimed; /* out: given back under memory pressure so far */
	__u64 reserved[4];	/* in: must be 0 */
};

/*
 * SLSVIRT_IOC_GET_GENERATION: the VM's instance generation. It changes
 * whenever the VM becomes a new instance of saved state: restored from an
 * epoch, or started as one of several clones of one epoch (which then run
 * the same memory image). Software that keeps random state or unique IDs
 * must regenerate them when it changes. The value is opaque: compare it,
 * do not order it.
 * in:  flags: 0 = return at once; SLSVIRT_GEN_WAIT = block (interruptibly)
 *      until the generation differs from @generation. reserved must be 0.
 * out: generation.
 * Errors: -EINVAL (flags/reserved), -ERESTARTSYS, -ENODEV, -EFAULT,
 *         -EOPNOTSUPP when the device has no generation register.
 */
struct slsvirt_generation {
	__u32 flags;		/* in: 0 or SLSVIRT_GEN_WAIT */
	__u32 reserved0;	/* in: must be 0 */
	__u64 generation;	/* in (WAIT): the value seen; out: the current one */
	__u64 reserved[2];	/* in: must be 0 */
};

#define SLSVIRT_GEN_WAIT	(1u << 0)

#define SLSVIRT_IOC_GET_INFO	_IOWR(SLSVIRT_IOC_MAGIC, 0x00, struct slsvirt_info)
#define SLSVIRT_IOC_PERSIST	_IOWR(SLSVIRT_IOC_MAGIC, 0x01, struct slsvirt_persist)
#define SLSVIRT_IOC_GET_EPOCH	_IOWR(SLSVIRT_IOC_MAGIC, 0x02, struct slsvirt_epoch_info)
#define SLSVIRT_IOC_MEM_RELEASE	_IOWR(SLSVIRT_IOC_MAGIC, 0x03, struct slsvirt_mem_range)
#define SLSVIRT_IOC_MEM_RECLAIM	_IOWR(SLSVIRT_IOC_MAGIC, 0x04, struct slsvirt_mem_range)
#define SLSVIRT_IOC_MEM_INFO	_IOWR(SLSVIRT_IOC_MAGIC, 0x05, struct slsvirt_mem_info)
#define SLSVIRT_IOC_GET_GENERATION _IOWR(SLSVIRT_IOC_MAGIC, 0x06, struct slsvirt_generation)

#endif /* _UAPI_LINUX_SLSVIRT_H */
