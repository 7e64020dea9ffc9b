/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libslsvirt: thin wrappers around the /dev/slsvirt ioctls
 * (include/uapi/linux/slsvirt.h).
 *
 * Every function returns 0 (or an fd) on success and -1 with errno set on
 * failure, like the system calls it wraps. errno values:
 *   EIO     host not checkpointing, or the checkpoint failed
 *   EINTR   a signal interrupted the wait (PERSIST; nothing was lost: call
 *           again)
 *   ENODEV  the device went away
 *   ENOENT  no /dev/slsvirt (driver not loaded or no device)
 */
#ifndef SLSVIRT_USER_H
#define SLSVIRT_USER_H

#include <stdint.h>

#include <linux/slsvirt.h>

#define SLSVIRT_DEV_PATH "/dev/" SLSVIRT_DEV_NAME

/* Open /dev/slsvirt read-write, close-on-exec. */
int slsvirt_open(void);

/*
 * Durability barrier: returns once every memory write this process (or any
 * other) made before the call is part of a durable checkpoint. @epoch (may
 * be NULL) receives that checkpoint's epoch.
 */
int slsvirt_persist(int fd, uint64_t *epoch);

/* Fill @info (flags and reserved are zeroed by the call). */
int slsvirt_info(int fd, struct slsvirt_info *info);

#endif /* SLSVIRT_USER_H */
