// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-elastic [PRESSURE_MIB]: the guest half of
 * tests/integration/elastic-kill-restore. Driven by the host's memory
 * target (slsctl mem --target), which it watches through MEM_INFO:
 *
 *  1. Maps a 32 MiB elastic region, fills it with a pattern, releases the
 *     middle 16 MiB: "SLS: elastic released ...".
 *  2. Waits until the host asks for memory (target_released > 0) and the
 *     driver holds its share: "SLS: elastic shrunk driver=D region=R
 *     released=X" (the guest's view, compared with query-sls-mem on the
 *     host, before and after a kill + restore).
 *  3. Waits until the host asks for everything back (target_released == 0)
 *     and the driver gave it back; reclaims the middle and checks it reads
 *     zero and the rest still holds the pattern: "SLS: elastic verify ok" or
 *     "... FAIL".
 *  4. Waits for a new target, then allocates and touches PRESSURE_MIB of
 *     ordinary memory (more than is free while shrunk): the driver must give
 *     memory back (shrinker) instead of the guest running out. "SLS:
 *     elastic pressure ok shrinker=BYTES released=X".
 * Then "SLS: alive" once a second.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slsvirt.h"

#define PG	4096UL
#define MIB	(1024UL * 1024)
#define REGION	(32 * MIB)
#define HOLE	(8 * MIB)	/* [HOLE, HOLE + HOLE_LEN) is released */
#define HOLE_LEN (16 * MIB)

static int fd;

static struct slsvirt_mem_info info(void)
{
	struct slsvirt_mem_info mi;

	if (slsvirt_mem_info(fd, &mi) < 0) {
		printf("SLS: elastic FAIL MEM_INFO: %s\n", strerror(errno));
		exit(1);
	}
	return mi;
}

static void print_view(const char *what)
{
	struct slsvirt_mem_info mi = info();

	printf("SLS: elastic %s driver=%" PRIu64 " region=%" PRIu64 " released=%" PRIu64
	       " target=%" PRIu64 " shrinker=%" PRIu64 "\n", what, (uint64_t)mi.driver_released,
	       (uint64_t)mi.region_released, (uint64_t)mi.released,
	       (uint64_t)mi.target_released, (uint64_t)mi.shrinker_reclaimed);
	fflush(stdout);
}

static unsigned char pattern(size_t off)
{
	return (unsigned char)((off / PG * 131 + 7) | 1);
}

/* Until the driver holds what the target asks of it (the region's part aside). */
static void wait_target(bool want_released)
{
	for (;;) {
		struct slsvirt_mem_info mi = info();
		uint64_t mine = mi.target_released > mi.region_released ?
				mi.target_released - mi.region_released : 0;

		if (want_released ? (mi.target_released && mi.driver_released >= mine) :
				    (!mi.target_released && !mi.driver_released))
			return;
		usleep(50 * 1000);
	}
}

int main(int argc, char **argv)
{
	size_t pressure = (argc > 1 ? strtoul(argv[1], NULL, 10) : 100) * MIB;
	unsigned char *r, *hog;
	uint64_t done;
	size_t i;
	int bad = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = slsvirt_open();
	r = fd < 0 ? NULL : slsvirt_mem_map(fd, REGION);
	if (!r) {
		printf("SLS: elastic FAIL setup: %s\n", strerror(errno));
		return 1;
	}
	for (i = 0; i < REGION; i += PG)
		memset(r + i, pattern(i), PG);
	if (slsvirt_mem_release(fd, r + HOLE, HOLE_LEN, &done) < 0) {
		printf("SLS: elastic FAIL release: %s\n", strerror(errno));
		return 1;
	}
	print_view("released");

	wait_target(true);
	print_view("shrunk");

	wait_target(false);
	if (slsvirt_mem_reclaim(fd, r + HOLE, HOLE_LEN, &done) < 0) {
		printf("SLS: elastic FAIL reclaim: %s\n", strerror(errno));
		return 1;
	}
	for (i = 0; i < REGION; i += 8) {
		uint64_t v = *(uint64_t *)(r + i), want = 0;

		if (i < HOLE || i >= HOLE + HOLE_LEN)
			memset(&want, pattern(i), sizeof(want));
		if (v != want && bad++ < 3)
			printf("SLS: elastic bad byte at %zu: %#" PRIx64 " want %#" PRIx64 "\n",
			       i, v, want);
	}
	print_view("grown");
	printf("SLS: elastic verify %s\n", bad ? "FAIL" : "ok");

	wait_target(true);
	print_view("shrunk-again");
	hog = malloc(pressure);
	if (!hog) {
		printf("SLS: elastic pressure FAIL malloc\n");
		return 1;
	}
	for (i = 0; i < pressure; i += PG) {
		hog[i] = 1;
		if (i % (32 * MIB) == 0)
			print_view("pressure at");
	}
	print_view("pressure ok");

	for (;;) {
		printf("SLS: alive\n");
		sleep(1);
	}
}
