// SPDX-License-Identifier: GPL-2.0-or-later
/* libslsvirt: see slsvirt.h. */
#include "slsvirt.h"

#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>

int slsvirt_open(void)
{
	return open(SLSVIRT_DEV_PATH, O_RDWR | O_CLOEXEC);
}

int slsvirt_persist(int fd, uint64_t *epoch)
{
	struct slsvirt_persist req;

	memset(&req, 0, sizeof(req));
	if (ioctl(fd, SLSVIRT_IOC_PERSIST, &req) < 0)
		return -1;
	if (epoch)
		*epoch = req.epoch;
	return 0;
}

int slsvirt_info(int fd, struct slsvirt_info *info)
{
	memset(info, 0, sizeof(*info));
	return ioctl(fd, SLSVIRT_IOC_GET_INFO, info) < 0 ? -1 : 0;
}
