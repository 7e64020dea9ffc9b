// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-mem-test: guest-side test of elastic memory (mmap of /dev/slsvirt,
 * SLSVIRT_IOC_MEM_RELEASE/RECLAIM/INFO) through libslsvirt.
 *
 * Prints "SLS: TEST <name> ok|FAIL <why>" per case, then
 * "SLS: mem-test PASS" (exit 0) or "SLS: mem-test FAIL <n>" (exit 1).
 * What the host sees is checked through the device's own count
 * (MEM_INFO.released comes from MEM_RELEASED_PAGES), so a release the
 * driver only pretended to make fails here.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "slsvirt.h"

#define PG		4096UL
#define MIB		(1024UL * 1024)
#define REGION		(32 * MIB)

static int failures;
static int fd = -1;

static void report(const char *name, bool ok, const char *fmt, ...)
{
	char why[256] = "";
	va_list ap;

	if (!ok && fmt) {
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
	}
	printf("SLS: TEST %s %s%s%s\n", name, ok ? "ok" : "FAIL", ok ? "" : " ", why);
	fflush(stdout);
	if (!ok)
		failures++;
}

static uint64_t dev_released(void)
{
	struct slsvirt_mem_info mi;

	if (slsvirt_mem_info(fd, &mi) < 0) {
		perror("MEM_INFO");
		return UINT64_MAX;
	}
	return mi.released;
}

static uint64_t region_released(void)
{
	struct slsvirt_mem_info mi;

	return slsvirt_mem_info(fd, &mi) < 0 ? UINT64_MAX : mi.region_released;
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i += PG)
		memset(p + i, (int)((i / PG + seed) & 0xff) | 1, PG);
}

/* Offset of the first page in [p, p + len) that does not hold its fill() byte. */
static long check_fill(const unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i += PG) {
		unsigned char want = (unsigned char)(((i / PG + seed) & 0xff) | 1);

		for (size_t j = 0; j < PG; j += 512)
			if (p[i + j] != want)
				return (long)i;
	}
	return -1;
}

static bool all_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i += 8)
		if (*(const uint64_t *)(p + i))
			return false;
	return true;
}

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* Does touching @p raise SIGBUS? (the region is not inherited by a child,
 * so this runs in-process, with a handler) */
static bool touch_gives_sigbus(volatile unsigned char *p)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	bool bus = false;

	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(bus_jmp, 1) == 0)
		(void)p[0];
	else
		bus = true;
	sigaction(SIGBUS, &old, NULL);
	return bus;
}

static int range_ioctl(unsigned long cmd, uint64_t addr, uint64_t len, uint32_t flags,
		       uint64_t reserved, uint64_t *done)
{
	struct slsvirt_mem_range r = { .addr = addr, .len = len, .flags = flags };
	int ret;

	r.reserved[1] = reserved;
	r.done = 12345;
	ret = ioctl(fd, cmd, &r);
	if (done)
		*done = r.done;
	return ret < 0 ? -errno : 0;
}

static void test_info_args(void)
{
	struct slsvirt_mem_info mi;
	int ret;

	memset(&mi, 0, sizeof(mi));
	mi.flags = 1;
	ret = ioctl(fd, SLSVIRT_IOC_MEM_INFO, &mi) < 0 ? errno : 0;
	report("info-flags", ret == EINVAL, "errno %d", ret);
	memset(&mi, 0, sizeof(mi));
	mi.reserved[3] = 1;
	ret = ioctl(fd, SLSVIRT_IOC_MEM_INFO, &mi) < 0 ? errno : 0;
	report("info-reserved", ret == EINVAL, "errno %d", ret);
	ret = ioctl(fd, SLSVIRT_IOC_MEM_INFO, NULL) < 0 ? errno : 0;
	report("info-null", ret == EFAULT, "errno %d", ret);
	ret = slsvirt_mem_info(fd, &mi);
	report("info", ret == 0 && mi.ram >= 128 * MIB && mi.ceiling == mi.ram &&
	       mi.released == mi.driver_released + mi.region_released,
	       "ret %d ram %" PRIu64 " ceiling %" PRIu64 " released %" PRIu64
	       " driver %" PRIu64 " regions %" PRIu64, ret, (uint64_t)mi.ram,
	       (uint64_t)mi.ceiling, (uint64_t)mi.released,
	       (uint64_t)mi.driver_released, (uint64_t)mi.region_released);
}

static void test_map_args(void)
{
	struct slsvirt_mem_info mi;
	void *p;

	p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	report("map-private", p == MAP_FAILED && errno == EINVAL, "p %p errno %d", p, errno);
	if (p != MAP_FAILED)
		munmap(p, 4 * PG);
	p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PG);
	report("map-offset", p == MAP_FAILED && errno == EINVAL, "p %p errno %d", p, errno);
	if (p != MAP_FAILED)
		munmap(p, 4 * PG);
	if (slsvirt_mem_info(fd, &mi) == 0) {
		p = mmap(NULL, mi.ram + PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		report("map-larger-than-ram", p == MAP_FAILED && errno == EINVAL,
		       "p %p errno %d", p, errno);
		if (p != MAP_FAILED)
			munmap(p, mi.ram + PG);
	}
}

static void test_bad_ranges(unsigned char *r)
{
	uint64_t a = (uintptr_t)r, done = 7;
	unsigned char *heap = malloc(4 * PG);
	struct {
		const char *name;
		uint64_t addr, len;
		uint32_t flags;
		uint64_t reserved;
	} cases[] = {
		{ "bad-unaligned-addr", a + 1, PG, 0, 0 },
		{ "bad-unaligned-len", a, PG + 1, 0, 0 },
		{ "bad-empty", a, 0, 0, 0 },
		{ "bad-past-end", a + REGION - PG, 2 * PG, 0, 0 },
		{ "bad-before-start", a - PG, 2 * PG, 0, 0 },
		{ "bad-wraps", a, -PG, 0, 0 },
		{ "bad-not-elastic", ((uintptr_t)heap + PG) & ~(PG - 1), PG, 0, 0 },
		{ "bad-unmapped", 0x1000, PG, 0, 0 },
		{ "bad-flags", a, PG, 1, 0 },
		{ "bad-reserved", a, PG, 0, 1 },
	};
	uint64_t before = dev_released();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rel = range_ioctl(SLSVIRT_IOC_MEM_RELEASE, cases[i].addr, cases[i].len,
				      cases[i].flags, cases[i].reserved, &done);
		int rec = range_ioctl(SLSVIRT_IOC_MEM_RECLAIM, cases[i].addr, cases[i].len,
				      cases[i].flags, cases[i].reserved, NULL);

		report(cases[i].name, rel == -EINVAL && rec == -EINVAL && done == 0,
		       "release %d reclaim %d done %" PRIu64, rel, rec, done);
	}
	report("bad-null", range_ioctl(0, 0, 0, 0, 0, NULL) == -ENOTTY &&
	       ioctl(fd, SLSVIRT_IOC_MEM_RELEASE, NULL) < 0 && errno == EFAULT,
	       "errno %d", errno);
	report("bad-nothing-released", dev_released() == before && r[0] && r[REGION - 1],
	       "device released %" PRIu64 " -> %" PRIu64, before, dev_released());
	free(heap);
}

static void test_release_reclaim(unsigned char *r)
{
	uint64_t before = dev_released(), done = 0, mid;
	unsigned char *hole = r + 4 * MIB;
	const size_t hole_len = 8 * MIB;
	long bad;
	int ret;

	ret = slsvirt_mem_release(fd, hole, hole_len, &done);
	mid = dev_released();
	report("release", ret == 0 && done == hole_len && mid == before + hole_len &&
	       region_released() == hole_len,
	       "ret %d errno %d done %" PRIu64 " device released %" PRIu64 " -> %" PRIu64,
	       ret, errno, done, before, mid);
	report("release-sigbus", touch_gives_sigbus(hole) &&
	       touch_gives_sigbus(hole + hole_len - PG), "no SIGBUS on a released page");
	bad = check_fill(r, 4 * MIB, 1);
	if (bad < 0)
		bad = check_fill(r + 12 * MIB, REGION - 12 * MIB, 1 + 3 * 1024);
	report("release-neighbours-intact", bad < 0, "page at %ld changed", bad);

	/* Double release: of the same range, and of one overlapping it. */
	ret = range_ioctl(SLSVIRT_IOC_MEM_RELEASE, (uintptr_t)hole, hole_len, 0, 0, &done);
	report("double-release", ret == -EINVAL && done == 0 && dev_released() == mid,
	       "ret %d done %" PRIu64, ret, done);
	ret = range_ioctl(SLSVIRT_IOC_MEM_RELEASE, (uintptr_t)hole - PG, 2 * PG, 0, 0, &done);
	report("overlapping-release", ret == -EINVAL && done == 0 && dev_released() == mid &&
	       r[4 * MIB - PG] != 0, "ret %d done %" PRIu64, ret, done);

	/* Reclaim of memory never released (partly or wholly). */
	ret = range_ioctl(SLSVIRT_IOC_MEM_RECLAIM, (uintptr_t)r, PG, 0, 0, &done);
	report("reclaim-never-released", ret == -EINVAL && done == 0 && r[0] != 0,
	       "ret %d done %" PRIu64, ret, done);
	ret = range_ioctl(SLSVIRT_IOC_MEM_RECLAIM, (uintptr_t)hole, hole_len + PG, 0, 0, &done);
	report("reclaim-partly-released", ret == -EINVAL && done == 0 &&
	       dev_released() == mid, "ret %d done %" PRIu64, ret, done);

	ret = slsvirt_mem_reclaim(fd, hole, hole_len, &done);
	report("reclaim", ret == 0 && done == hole_len && dev_released() == before &&
	       region_released() == 0, "ret %d errno %d done %" PRIu64, ret, errno, done);
	report("reclaim-reads-zero", all_zero(hole, hole_len), "stale data after reclaim");
	fill(hole, hole_len, 77);
	bad = check_fill(hole, hole_len, 77);
	report("reclaim-writable", bad < 0, "page at %ld", bad);
	ret = range_ioctl(SLSVIRT_IOC_MEM_RECLAIM, (uintptr_t)hole, hole_len, 0, 0, &done);
	report("double-reclaim", ret == -EINVAL && done == 0, "ret %d", ret);
}

/* Pages never touched: nothing to give the host, but the API behaves the same. */
static void test_untouched(void)
{
	uint64_t before = dev_released(), done = 0;
	unsigned char *p = slsvirt_mem_map(fd, 4 * MIB);
	int a, b;

	if (!p) {
		report("untouched", false, "map: errno %d", errno);
		return;
	}
	p[0] = 0x42;	/* one page populated, the rest not */
	a = slsvirt_mem_release(fd, p, 4 * MIB, &done);
	/* The device counts what it was given: the one populated page. */
	report("untouched-release", a == 0 && done == 4 * MIB &&
	       dev_released() == before + PG && region_released() == PG &&
	       touch_gives_sigbus(p + 2 * MIB),
	       "ret %d done %" PRIu64 " released %" PRIu64 " -> %" PRIu64, a, done,
	       before, dev_released());
	b = slsvirt_mem_reclaim(fd, p, 4 * MIB, &done);
	report("untouched-reclaim", b == 0 && done == 4 * MIB && dev_released() == before &&
	       all_zero(p, 4 * MIB), "ret %d done %" PRIu64, b, done);
	munmap(p, 4 * MIB);
}

static void test_munmap_released(void)
{
	uint64_t before = dev_released(), done;
	unsigned char *p = slsvirt_mem_map(fd, 8 * MIB);
	int ret;

	if (!p) {
		report("munmap-released", false, "map: errno %d", errno);
		return;
	}
	fill(p, 8 * MIB, 5);
	ret = slsvirt_mem_release(fd, p + 2 * MIB, 4 * MIB, &done);
	/* A region cannot be split: partial unmap and mprotect fail. */
	report("munmap-partial", munmap(p, 2 * MIB) < 0 && errno == EINVAL &&
	       mprotect(p, PG, PROT_READ) < 0 && errno == EINVAL && p[0] != 0,
	       "errno %d", errno);
	report("munmap-released", ret == 0 && munmap(p, 8 * MIB) == 0 &&
	       dev_released() == before && region_released() == 0,
	       "ret %d released %" PRIu64 " -> %" PRIu64, ret, before, dev_released());
}

/* A forked child does not inherit the region; the parent's stays intact. */
static void test_fork(unsigned char *r)
{
	pid_t pid = fork();
	int st = 0;

	if (pid == 0)
		_exit(r[0] ? 1 : 0);	/* SIGSEGV: not mapped in the child */
	waitpid(pid, &st, 0);
	report("fork-not-inherited", WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV &&
	       check_fill(r, PG, 1) < 0, "child status %#x", st);
}

/* A release of many scattered ranges takes several doorbells. */
static void test_large(void)
{
	const size_t len = 64 * MIB;
	uint64_t before = dev_released(), done = 0;
	unsigned char *p = slsvirt_mem_map(fd, len);
	int ret;

	if (!p) {
		report("large", false, "map: errno %d", errno);
		return;
	}
	fill(p, len, 9);
	ret = slsvirt_mem_release(fd, p, len, &done);
	report("large-release", ret == 0 && done == len && dev_released() == before + len,
	       "ret %d errno %d done %" PRIu64, ret, errno, done);
	ret = slsvirt_mem_reclaim(fd, p, len, &done);
	report("large-reclaim", ret == 0 && done == len && dev_released() == before &&
	       all_zero(p, len), "ret %d errno %d done %" PRIu64, ret, errno, done);
	munmap(p, len);
}

int main(void)
{
	unsigned char *r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = slsvirt_open();
	if (fd < 0) {
		printf("SLS: mem-test FAIL cannot open %s: %s\n", SLSVIRT_DEV_PATH, strerror(errno));
		return 1;
	}
	test_info_args();
	test_map_args();
	r = slsvirt_mem_map(fd, REGION);
	if (!r) {
		printf("SLS: mem-test FAIL map: %s\n", strerror(errno));
		return 1;
	}
	report("map-zero", all_zero(r, REGION), "fresh region not zero");
	fill(r, REGION, 1);
	test_bad_ranges(r);
	test_release_reclaim(r);
	test_fork(r);
	test_untouched();
	test_munmap_released();
	test_large();
	munmap(r, REGION);
	report("all-returned", region_released() == 0,
	       "regions still hold %" PRIu64, region_released());

	if (failures) {
		printf("SLS: mem-test FAIL %d\n", failures);
		return 1;
	}
	printf("SLS: mem-test PASS\n");
	return 0;
}
