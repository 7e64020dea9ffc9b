// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * page-copy-probe: what one 4 KiB page copy costs on this machine, the unit
 * of a checkpoint's copy (engine: guest RAM -> staging memfd). Copies 300
 * random pages of a 256 MiB anonymous buffer into a 1 GiB memfd mapping, six
 * rounds; before round 3 it sleeps 3 s so the pages go idle, as the pages of
 * a real guest do between the epochs that dirty them.
 *
 *   cc -O2 -o page-copy-probe bench/tools/page-copy-probe.c && ./page-copy-probe
 *
 * On a bare host expect ~1 us/page in every round. Seen on the 2-core
 * Firecracker VMs this project is developed on (2026-11-30): 9-11 us/page
 * right after the buffers were written, 100-180 us/page after 3 s idle --
 * the hypervisor reclaims or remaps idle guest memory, below anything the
 * guest kernel shows (no page faults are counted, mlock does not help).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGES_PER_ROUND 300

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

int main(void)
{
	const size_t staging_len = 1ul << 30, ram_len = 256ul << 20;
	size_t off[PAGES_PER_ROUND];
	int fd = memfd_create("page-copy-probe", 0);
	char *staging, *ram;

	if (fd < 0 || ftruncate(fd, (off_t)staging_len)) {
		perror("memfd");
		return 1;
	}
	staging = mmap(NULL, staging_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ram = mmap(NULL, ram_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (staging == MAP_FAILED || ram == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	memset(staging, 1, staging_len);
	memset(ram, 2, ram_len);
	srand(1);
	for (int round = 0; round < 6; round++) {
		uint64_t t0;

		for (int i = 0; i < PAGES_PER_ROUND; i++)
			off[i] = ((size_t)rand() % (ram_len / 4096)) * 4096;
		if (round == 3)
			sleep(3);
		t0 = now_ns();
		for (int i = 0; i < PAGES_PER_ROUND; i++)
			memcpy(staging + off[i], ram + off[i], 4096);
		printf("round %d%s: %.2f us/page\n", round, round >= 3 ? " (pages idle > 3 s)" : "",
		       (double)(now_ns() - t0) / 1000.0 / PAGES_PER_ROUND);
	}
	return 0;
}
