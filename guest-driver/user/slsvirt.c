// SPDX-License-Identifier: GPL-2.0-or-later
/* libslsvirt: see slsvirt.h. */
#include "slsvirt.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int slsvirt_open(void)
{
	return open(SLSVIRT_DEV_PATH, O_RDWR | O_CLOEXEC);
}

static int persist(int fd, uint32_t flags, uint64_t *epoch)
{
	struct slsvirt_persist req;

	memset(&req, 0, sizeof(req));
	req.flags = flags;
	if (ioctl(fd, SLSVIRT_IOC_PERSIST, &req) < 0)
		return -1;
	if (epoch)
		*epoch = req.epoch;
	return 0;
}

int slsvirt_persist(int fd, uint64_t *epoch)
{
	return persist(fd, 0, epoch);
}

int slsvirt_persist_async(int fd, uint64_t *ticket)
{
	return persist(fd, SLSVIRT_PERSIST_ASYNC, ticket);
}

int slsvirt_read_completions(int fd, struct slsvirt_completion *recs, size_t max)
{
	ssize_t n = read(fd, recs, max * sizeof(*recs));

	if (n < 0)
		return -1;
	if (n == 0 || n % sizeof(*recs)) {	/* not the driver's contract */
		errno = EPROTO;
		return -1;
	}
	return n / sizeof(*recs);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int slsvirt_wait(int fd, uint64_t ticket, int timeout_ms, uint64_t *epoch)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct slsvirt_completion rec;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int left = -1, n;

		if (deadline >= 0) {
			int64_t d = deadline - now_ms();

			left = d < 0 ? 0 : (int)d;
		}
		/* No limit: read() itself blocks, and says ENOMSG if nothing is queued. */
		n = deadline < 0 ? 1 : poll(&pfd, 1, left);
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		/* One record at a time: later tickets' records stay queued. */
		n = read(fd, &rec, sizeof(rec));
		if (n < 0) {
			if (errno == EAGAIN)	/* another reader took it */
				continue;
			return -1;
		}
		if (n != sizeof(rec)) {
			errno = EPROTO;
			return -1;
		}
		if (rec.ticket < ticket)
			continue;
		if (rec.epoch >= ticket) {
			if (epoch)
				*epoch = rec.epoch;
			return 0;
		}
		errno = rec.status < 0 ? -rec.status : EIO;
		return -1;
	}
}

int slsvirt_get_epoch(int fd, struct slsvirt_epoch_info *ei)
{
	memset(ei, 0, sizeof(*ei));
	return ioctl(fd, SLSVIRT_IOC_GET_EPOCH, ei) < 0 ? -1 : 0;
}

int slsvirt_info(int fd, struct slsvirt_info *info)
{
	memset(info, 0, sizeof(*info));
	return ioctl(fd, SLSVIRT_IOC_GET_INFO, info) < 0 ? -1 : 0;
}

void *slsvirt_mem_map(int fd, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int slsvirt_mem_range(int fd, unsigned long cmd, void *addr, size_t len,
			     uint64_t *done)
{
	struct slsvirt_mem_range r;
	int ret;

	memset(&r, 0, sizeof(r));
	r.addr = (uintptr_t)addr;
	r.len = len;
	ret = ioctl(fd, cmd, &r);
	if (done)
		*done = r.done;
	return ret < 0 ? -1 : 0;
}

int slsvirt_mem_release(int fd, void *addr, size_t len, uint64_t *done)
{
	return slsvirt_mem_range(fd, SLSVIRT_IOC_MEM_RELEASE, addr, len, done);
}

int slsvirt_mem_reclaim(int fd, void *addr, size_t len, uint64_t *done)
{
	return slsvirt_mem_range(fd, SLSVIRT_IOC_MEM_RECLAIM, addr, len, done);
}

int slsvirt_mem_info(int fd, struct slsvirt_mem_info *mi)
{
	memset(mi, 0, sizeof(*mi));
	return ioctl(fd, SLSVIRT_IOC_MEM_INFO, mi) < 0 ? -1 : 0;
}
