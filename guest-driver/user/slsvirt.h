/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libslsvirt: thin wrappers around the /dev/slsvirt ioctls
 * (include/uapi/linux/slsvirt.h). C++ callers: slsvirt.hpp wraps this.
 *
 * Every function returns 0 (or an fd, or a count) on success and -1 with
 * errno set on failure, like the system calls it wraps. errno values:
 *   EIO       host not checkpointing (at once, no wait), or the checkpoint
 *             failed
 *   EINTR     a signal interrupted a wait (nothing was lost: call again;
 *             an asynchronous ticket stays queued)
 *   ENODEV    the device went away
 *   ENOENT    no /dev/slsvirt (driver not loaded or no device)
 *   EINVAL    old driver without the requested feature (e.g. async PERSIST)
 *   ENOTTY    old driver without the requested ioctl (GET_EPOCH)
 *   EBUSY     SLSVIRT_ASYNC_MAX tickets already queued on this fd
 *   ENOMSG    slsvirt_wait()/slsvirt_read_completions(): no ticket queued
 *   ETIMEDOUT slsvirt_wait(): the timeout passed first
 *   ENOSPC    slsvirt_mem_reclaim(): over the host's memory ceiling
 *   EOPNOTSUPP elastic memory: the device has no memory elasticity
 */
#ifndef SLSVIRT_USER_H
#define SLSVIRT_USER_H

#include <stddef.h>
#include <stdint.h>

#include <linux/slsvirt.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLSVIRT_DEV_PATH "/dev/" SLSVIRT_DEV_NAME

/* Open /dev/slsvirt read-write, close-on-exec. */
int slsvirt_open(void);

/*
 * Durability barrier: returns once every memory write this process (or any
 * other) made before the call is part of a durable checkpoint. @epoch (may
 * be NULL) receives that checkpoint's epoch.
 */
int slsvirt_persist(int fd, uint64_t *epoch);

/*
 * Asynchronous barrier: returns at once; @ticket receives the epoch that
 * will cover every write made before the call. The writes are durable once
 * a completion for the ticket reports status 0 (slsvirt_wait(), or poll()
 * for POLLIN and slsvirt_read_completions()), or once GET_EPOCH shows
 * durable_epoch >= ticket. Each call queues one completion on @fd.
 */
int slsvirt_persist_async(int fd, uint64_t *ticket);

/*
 * Read up to @max ready completions (blocks unless @fd is O_NONBLOCK).
 * Returns how many (>= 1), or -1: EAGAIN (O_NONBLOCK, none ready yet),
 * ENOMSG (no ticket queued), ENODEV, EINTR.
 */
int slsvirt_read_completions(int fd, struct slsvirt_completion *recs, size_t max);

/*
 * Wait until @ticket (from slsvirt_persist_async() on this @fd) settled:
 * 0 if durable (@epoch, may be NULL, gets the durable epoch), else -1 with
 * EIO (that epoch failed: persist again), ENODEV, ETIMEDOUT (after
 * @timeout_ms; -1 = no limit; the ticket stays queued), EINTR or ENOMSG.
 * With a timeout it poll()s first (a fd with no ticket queued then times
 * out; without one, read() fails with ENOMSG at once).
 * Completions arrive in ticket order; this consumes the ones of tickets
 * up to and including @ticket (one completion for @ticket itself), so wait
 * for the tickets of one fd in the order they were issued.
 */
int slsvirt_wait(int fd, uint64_t ticket, int timeout_ms, uint64_t *epoch);

/* Current, durable and failed epoch (flags and reserved are zeroed by the call). */
int slsvirt_get_epoch(int fd, struct slsvirt_epoch_info *ei);

/* Fill @info (flags and reserved are zeroed by the call). */
int slsvirt_info(int fd, struct slsvirt_info *info);

/*
 * Elastic memory (see include/uapi/linux/slsvirt.h). slsvirt_mem_map() maps
 * @len bytes (page multiple) of zero-filled elastic memory and returns its
 * address, or NULL with errno (EOPNOTSUPP: the device has no memory
 * elasticity); unmap it with munmap() (also while parts are released).
 * slsvirt_mem_release() gives [addr, addr + len) to the host (touching it
 * then raises SIGBUS), slsvirt_mem_reclaim() takes it back (it reads as
 * zero). @done (may be NULL) receives how many bytes from @addr are in the
 * requested state (all of them on success, a prefix on ENOSPC/EBUSY).
 * errno: EINVAL (bad range, double release, reclaim of memory not released),
 * ENOSPC (reclaim over the host's ceiling), EBUSY (host cannot free now),
 * ENODEV, EOPNOTSUPP.
 */
void *slsvirt_mem_map(int fd, size_t len);
int slsvirt_mem_release(int fd, void *addr, size_t len, uint64_t *done);
int slsvirt_mem_reclaim(int fd, void *addr, size_t len, uint64_t *done);

/* Memory elasticity as the device and driver see it (flags/reserved zeroed). */
int slsvirt_mem_info(int fd, struct slsvirt_mem_info *mi);

#ifdef __cplusplus
}
#endif

#endif /* SLSVIRT_USER_H */
