// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-hostile [--seconds S] [--threads T] [--linger L]: a misbehaving guest for
 * tests/integration/hostile-guest-isolation. For S seconds (default 30) it
 * runs at once:
 *  - a PERSIST storm: T threads (default 8) of synchronous PERSISTs, one
 *    thread keeping SLSVIRT_ASYNC_MAX asynchronous tickets queued, and raw
 *    PERSIST doorbells written straight to BAR0 (bypassing the driver);
 *  - malformed ioctls: unknown numbers and sizes, bad flags, non-zero
 *    reserved fields, NULL and unmapped pointers, short reads; each must
 *    fail with the documented errno;
 *  - hostile register accesses through /sys/bus/pci/devices/BDF/resource0:
 *    unknown commands, writes to read-only registers (huge "epochs"),
 *    8-byte doorbells, reads of write-only and unknown registers, and
 *    accesses the memory core rejects (1/2-byte, unaligned). The device
 *    must count the device-level ones in BAD_ACCESSES and must not let
 *    any write change an epoch register.
 * Markers: "SLS: hostile storm started", then per part a result line, then
 * "SLS: hostile done ok" (exit 0) or "SLS: hostile done FAIL <n>" (exit 1),
 * after which it sleeps L seconds (default 0) so that the host can inspect
 * the still-running VM.
 * A's own PERSISTs may fail with EIO while its raw writes clobber the
 * doorbell's status: that hurts only A and is counted, not a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <slsvirt/hw.h>

#include "slsvirt.h"

#define MAX_THREADS	32

static double deadline;
static atomic_int failures;
static atomic_ullong persist_ok, persist_eio, persist_other, async_ok, async_err;
static atomic_ullong raw_doorbells;
static volatile uint8_t *regs;

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool running(void)
{
	return now_seconds() < deadline;
}

/* ---- the storm ---------------------------------------------------------- */

static void count_persist(int ret)
{
	if (!ret)
		persist_ok++;
	else if (errno == EIO)
		persist_eio++;
	else
		persist_other++;
}

static void *sync_storm(void *arg)
{
	int fd = slsvirt_open();

	(void)arg;
	if (fd < 0) {
		failures++;
		return NULL;
	}
	while (running())
		count_persist(slsvirt_persist(fd, NULL));
	close(fd);
	return NULL;
}

/* Keeps the fd's ticket queue full; drains completions as they come. */
static void *async_storm(void *arg)
{
	struct slsvirt_completion recs[SLSVIRT_ASYNC_MAX];
	int fd = slsvirt_open(), queued = 0;

	(void)arg;
	if (fd < 0) {
		failures++;
		return NULL;
	}
	while (running()) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t ticket;
		int n;

		while (queued < SLSVIRT_ASYNC_MAX && !slsvirt_persist_async(fd, &ticket))
			queued++;
		if (queued == SLSVIRT_ASYNC_MAX && slsvirt_persist_async(fd, &ticket) == 0) {
			printf("SLS: hostile async: ticket %d accepted beyond SLSVIRT_ASYNC_MAX\n",
			       SLSVIRT_ASYNC_MAX + 1);
			failures++;
			queued++;
		}
		if (!queued)
			continue;	/* every request failed (EIO): try again */
		if (poll(&pfd, 1, 5000) <= 0)
			continue;
		n = slsvirt_read_completions(fd, recs, SLSVIRT_ASYNC_MAX);
		for (int i = 0; i < n; i++)
			recs[i].status ? async_err++ : async_ok++;
		if (n > 0)
			queued -= n;
	}
	close(fd);
	return NULL;
}

static void *raw_doorbell_storm(void *arg)
{
	(void)arg;
	while (running()) {
		*(volatile uint32_t *)(regs + SLSVIRT_REG_CMD) = SLSVIRT_CMD_PERSIST;
		raw_doorbells++;
		usleep(100);
	}
	return NULL;
}

/* ---- malformed ioctls --------------------------------------------------- */

static unsigned long long bad_ioctls;

static void expect_fail(int fd, unsigned long cmd, void *arg, int want, const char *what)
{
	int ret = ioctl(fd, cmd, arg);

	bad_ioctls++;
	if (ret == 0 || errno != want) {
		printf("SLS: hostile ioctl %s: got %s, want %s\n", what,
		       ret ? strerror(errno) : "success", strerror(want));
		failures++;
	}
}

static void bad_ioctl_round(int fd, void *unmapped)
{
	struct slsvirt_persist req;
	struct slsvirt_epoch_info ei;
	struct slsvirt_info info;
	char small[8];
	ssize_t n;

	expect_fail(fd, _IOWR(SLSVIRT_IOC_MAGIC, 0x7e, struct slsvirt_persist), &req, ENOTTY, "nr 0x7e");
	expect_fail(fd, _IOWR(SLSVIRT_IOC_MAGIC, 0xff, struct slsvirt_persist), &req, ENOTTY, "nr 255");
	expect_fail(fd, _IOWR(SLSVIRT_IOC_MAGIC, 0x01, char[4096]), &req, ENOTTY, "huge size");
	expect_fail(fd, _IOR(SLSVIRT_IOC_MAGIC, 0x01, struct slsvirt_persist), &req, ENOTTY, "wrong dir");
	expect_fail(fd, _IO(SLSVIRT_IOC_MAGIC, 0x02), NULL, ENOTTY, "no size");
	for (int bit = 1; bit < 32; bit++) {
		memset(&req, 0, sizeof(req));
		req.flags = 1u << bit;
		expect_fail(fd, SLSVIRT_IOC_PERSIST, &req, EINVAL, "persist flag");
		req.flags |= SLSVIRT_PERSIST_ASYNC;
		expect_fail(fd, SLSVIRT_IOC_PERSIST, &req, EINVAL, "async persist flag");
	}
	memset(&req, 0, sizeof(req));
	req.reserved[3] = ~0ull;
	req.flags = SLSVIRT_PERSIST_ASYNC;
	expect_fail(fd, SLSVIRT_IOC_PERSIST, &req, EINVAL, "async persist reserved");
	memset(&ei, 0, sizeof(ei));
	ei.flags = ~0u;
	expect_fail(fd, SLSVIRT_IOC_GET_EPOCH, &ei, EINVAL, "get_epoch flags");
	memset(&ei, 0, sizeof(ei));
	ei.reserved[0] = 1;
	expect_fail(fd, SLSVIRT_IOC_GET_EPOCH, &ei, EINVAL, "get_epoch reserved");
	memset(&info, 0, sizeof(info));
	info.reserved[2] = 1;
	expect_fail(fd, SLSVIRT_IOC_GET_INFO, &info, EINVAL, "get_info reserved");
	expect_fail(fd, SLSVIRT_IOC_PERSIST, NULL, EFAULT, "persist NULL");
	expect_fail(fd, SLSVIRT_IOC_PERSIST, unmapped, EFAULT, "persist unmapped");
	expect_fail(fd, SLSVIRT_IOC_GET_EPOCH, unmapped, EFAULT, "get_epoch unmapped");
	expect_fail(fd, SLSVIRT_IOC_GET_INFO, (void *)-4096L, EFAULT, "get_info kernel address");

	n = read(fd, small, sizeof(small));
	bad_ioctls++;
	if (n >= 0 || errno != EINVAL) {
		printf("SLS: hostile short read: got %zd (%s), want EINVAL\n", n, strerror(errno));
		failures++;
	}
	n = write(fd, small, sizeof(small));
	bad_ioctls++;
	if (n >= 0) {
		printf("SLS: hostile write() was accepted\n");
		failures++;
	}
}

static void *bad_ioctl_storm(void *arg)
{
	void *unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = slsvirt_open();

	(void)arg;
	if (fd < 0 || unmapped == MAP_FAILED) {
		failures++;
		return NULL;
	}
	while (running()) {
		bad_ioctl_round(fd, unmapped);
		usleep(2000);
	}
	close(fd);
	return NULL;
}

/* ---- hostile register accesses ------------------------------------------ */

typedef uint32_t __attribute__((aligned(1))) u32_unaligned;

static unsigned long long bad_accesses_sent;
static bool epochs_clobbered;

static uint32_t rd32(unsigned int off) { return *(volatile uint32_t *)(regs + off); }
static uint64_t rd64(unsigned int off) { return *(volatile uint64_t *)(regs + off); }
static void wr32(unsigned int off, uint32_t v) { *(volatile uint32_t *)(regs + off) = v; }
static void wr64(unsigned int off, uint64_t v) { *(volatile uint64_t *)(regs + off) = v; }

/* One round of accesses the device itself must reject (each counted once). */
static void bad_register_round(void)
{
	static const uint32_t bad_cmds[] = { SLSVIRT_CMD_NONE, 0x40, 0x7fffffff, 0xffffffff };
	const uint64_t huge = 0xfff0000000000000ull;
	uint64_t durable_before = rd64(SLSVIRT_REG_DURABLE_EPOCH);
	uint64_t current_before = rd64(SLSVIRT_REG_CURRENT_EPOCH);

	for (size_t i = 0; i < sizeof(bad_cmds) / sizeof(bad_cmds[0]); i++)
		wr32(SLSVIRT_REG_CMD, bad_cmds[i]);
	wr64(SLSVIRT_REG_CMD, SLSVIRT_CMD_PERSIST);		/* doorbell, wrong size */
	wr64(SLSVIRT_REG_TARGET_EPOCH, huge);			/* read-only */
	wr64(SLSVIRT_REG_DURABLE_EPOCH, huge);
	wr32(SLSVIRT_REG_DURABLE_EPOCH + 4, 0xffffffffu);
	wr64(SLSVIRT_REG_CURRENT_EPOCH, huge);
	wr64(SLSVIRT_REG_FAILED_EPOCH, huge);
	wr32(SLSVIRT_REG_BAD_ACCESSES, 0);
	wr32(SLSVIRT_REG_MAGIC, 0);
	wr32(0x800, SLSVIRT_CMD_PERSIST);			/* unknown register */
	(void)rd32(SLSVIRT_REG_CMD);				/* write-only */
	(void)rd32(0x48);					/* unknown (0x40: GENERATION) */
	(void)rd32(SLSVIRT_REGS_SIZE - 4);			/* unknown, last */
	(void)rd64(SLSVIRT_REG_MAGIC);				/* 32-bit register, 8 bytes */
	bad_accesses_sent += 4 + 9 + 4;

	/* Rejected by QEMU's memory core (min access 4, aligned): not counted. */
	*(volatile uint8_t *)(regs + SLSVIRT_REG_CMD) = SLSVIRT_CMD_PERSIST;
	*(volatile uint16_t *)(regs + SLSVIRT_REG_CMD) = SLSVIRT_CMD_PERSIST;
	(void)*(volatile uint8_t *)(regs + SLSVIRT_REG_DURABLE_EPOCH);
	*(volatile u32_unaligned *)(regs + SLSVIRT_REG_CMD + 1) = SLSVIRT_CMD_PERSIST;

	if (rd32(SLSVIRT_REG_MAGIC) != SLSVIRT_HW_MAGIC ||
	    rd64(SLSVIRT_REG_DURABLE_EPOCH) >= huge || rd64(SLSVIRT_REG_CURRENT_EPOCH) >= huge ||
	    rd64(SLSVIRT_REG_FAILED_EPOCH) >= huge || rd64(SLSVIRT_REG_TARGET_EPOCH) >= huge ||
	    rd64(SLSVIRT_REG_DURABLE_EPOCH) < durable_before ||
	    rd64(SLSVIRT_REG_CURRENT_EPOCH) < current_before)
		epochs_clobbered = true;
}

static int map_registers(char *bdf, size_t len)
{
	char link[256], path[512], *slash;
	ssize_t n;
	void *p;
	int fd;

	n = readlink("/sys/class/misc/" SLSVIRT_DEV_NAME "/device", link, sizeof(link) - 1);
	if (n < 0) {
		printf("SLS: hostile no device: %s\n", strerror(errno));
		return -1;
	}
	link[n] = 0;
	slash = strrchr(link, '/');
	snprintf(bdf, len, "%s", slash ? slash + 1 : link);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource%d", bdf, SLSVIRT_BAR_REGS);
	/* With the driver bound this needs iomem=relaxed (CONFIG_IO_STRICT_DEVMEM). */
	fd = open(path, O_RDWR | O_SYNC | O_CLOEXEC);
	if (fd < 0) {
		printf("SLS: hostile open %s: %s\n", path, strerror(errno));
		return -1;
	}
	p = mmap(NULL, SLSVIRT_REGS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		printf("SLS: hostile mmap %s: %s\n", path, strerror(errno));
		return -1;
	}
	regs = p;
	return 0;
}

static int parse_uint(const char *s, unsigned int *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v > 100000)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	unsigned int seconds = 30, nthreads = 8, linger = 0, nstarted = 0;
	pthread_t tids[MAX_THREADS + 3];
	uint32_t bad_before, bad_after;
	struct slsvirt_epoch_info e0, e1;
	unsigned long long rounds = 0;
	char bdf[256];
	int fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc && !parse_uint(argv[i + 1], &seconds)) {
			i++;
		} else if (!strcmp(argv[i], "--linger") && i + 1 < argc &&
			   !parse_uint(argv[i + 1], &linger)) {
			i++;
		} else if (!strcmp(argv[i], "--threads") && i + 1 < argc &&
			   !parse_uint(argv[i + 1], &nthreads) && nthreads <= MAX_THREADS) {
			i++;
		} else {
			fprintf(stderr, "usage: sls-hostile [--seconds S] [--threads T<=%d] [--linger L]\n",
				MAX_THREADS);
			return 2;
		}
	}
	fd = slsvirt_open();
	if (fd < 0 || map_registers(bdf, sizeof(bdf)) || slsvirt_get_epoch(fd, &e0)) {
		printf("SLS: hostile done FAIL setup: %s\n", strerror(errno));
		return 1;
	}
	bad_before = rd32(SLSVIRT_REG_BAD_ACCESSES);
	printf("SLS: hostile start bdf=%s current_epoch=%" PRIu64 " bad_accesses=%u\n", bdf,
	       (uint64_t)e0.current_epoch, bad_before);

	deadline = now_seconds() + seconds;
	for (unsigned int i = 0; i < nthreads + 3; i++) {
		void *(*fn)(void *) = i < nthreads ? sync_storm : i == nthreads ? async_storm :
				      i == nthreads + 1 ? raw_doorbell_storm : bad_ioctl_storm;

		if (pthread_create(&tids[nstarted], NULL, fn, NULL) == 0)
			nstarted++;
		else
			failures++;
	}
	printf("SLS: hostile storm started threads=%u seconds=%u\n", nthreads, seconds);
	/* Register abuse from this thread, paced so that -d guest_errors stays readable. */
	while (running()) {
		bad_register_round();
		rounds++;
		usleep(20000);
	}
	for (unsigned int i = 0; i < nstarted; i++)
		pthread_join(tids[i], NULL);

	bad_after = rd32(SLSVIRT_REG_BAD_ACCESSES);
	if (slsvirt_get_epoch(fd, &e1))
		failures++;
	printf("SLS: hostile ioctls malformed=%llu all-rejected=%s\n", bad_ioctls,
	       failures ? "no" : "yes");
	printf("SLS: hostile regs rounds=%llu bad_accesses_sent=%llu counted=%u epochs_clobbered=%s\n",
	       rounds, bad_accesses_sent, bad_after - bad_before, epochs_clobbered ? "yes" : "no");
	printf("SLS: hostile storm persist_ok=%llu persist_eio=%llu persist_other=%llu async_ok=%llu"
	       " async_err=%llu raw_doorbells=%llu epochs=%" PRIu64 "\n",
	       persist_ok, persist_eio, persist_other, async_ok, async_err, raw_doorbells,
	       (uint64_t)(e1.current_epoch - e0.current_epoch));
	if (bad_after - bad_before < bad_accesses_sent || epochs_clobbered || persist_other)
		failures++;
	if (failures)
		printf("SLS: hostile done FAIL %d\n", failures);
	else
		printf("SLS: hostile done ok\n");
	sleep(linger);
	return failures ? 1 : 0;
}
