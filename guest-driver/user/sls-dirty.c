// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-dirty KIB [BUFFER_MIB]: benchmark workload (bench/run checkpoint).
 *
 * Every 10 ms of guest time it writes one word into each of the next
 * ceil(KIB / 4) pages of a BUFFER_MIB buffer (default 256 MiB), so each
 * tick dirties that many distinct pages; the write position rotates over the
 * whole buffer, which is much larger than what one tick dirties. Between
 * ticks it runs fixed work units (a compute + write loop over one private
 * page) and counts them, so guest throughput can be compared with
 * checkpointing on and off.
 *
 *   after prefaulting the buffer       "SLS: dirty rate=<KIB>/10ms ready"
 *   about every 100 ms of guest time   "SLS: dirty work=<N> t=<ms> ticks=<T> late=<L>"
 *
 * N: work units completed; t: guest CLOCK_MONOTONIC ms since ready;
 * T: dirtying ticks done; L: ticks skipped because the program fell more than
 * one period behind (the dirty rate was not reached for those periods).
 * The guest clock stops while the VMM pauses the vCPUs, so throughput must be
 * measured against host time (the bench timestamps these lines on arrival).
 * KIB = 0 runs the work units alone.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE_BYTES		4096ul
#define TICK_NS			10000000ull	/* 10 ms */
#define REPORT_NS		100000000ull	/* 100 ms */
#define DEFAULT_BUFFER_MIB	256ul
#define WORK_ROUNDS		512

/* The work unit's private page: written every unit, so always dirty. */
static uint64_t scratch[PAGE_BYTES / sizeof(uint64_t)];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One work unit: a fixed xorshift mix written back into the scratch page. */
static void work_unit(uint64_t seed)
{
	uint64_t x = seed | 1;

	for (unsigned int i = 0; i < WORK_ROUNDS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		scratch[i % (PAGE_BYTES / sizeof(uint64_t))] += x;
	}
}

static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (!*s || *s == '-')
		return -1;
	v = strtoul(s, &end, 10);
	if (*end || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long kib, buffer_mib = DEFAULT_BUFFER_MIB;
	uint64_t pages_per_tick, buffer_pages, pos = 0, ticks = 0, late = 0, work = 0;
	uint64_t start, next_tick, next_report, now;
	unsigned char *buf;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2 || argc > 3 || parse_ulong(argv[1], 1ul << 20, &kib) ||
	    (argc == 3 && (parse_ulong(argv[2], 1ul << 16, &buffer_mib) || buffer_mib == 0))) {
		fprintf(stderr, "usage: sls-dirty KIB-per-10ms [BUFFER_MIB (default %lu)]\n",
			DEFAULT_BUFFER_MIB);
		return 2;
	}
	pages_per_tick = (kib * 1024 + PAGE_BYTES - 1) / PAGE_BYTES;
	buffer_pages = buffer_mib * (1024 * 1024 / PAGE_BYTES);
	if (pages_per_tick * 4 > buffer_pages) {
		fprintf(stderr, "sls-dirty: buffer of %lu MiB is not much larger than %lu KiB per tick\n",
			buffer_mib, kib);
		return 2;
	}

	buf = mmap(NULL, buffer_pages * PAGE_BYTES, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED) {
		perror("sls-dirty: mmap");
		return 1;
	}
	/* Non-zero content everywhere: no mechanism may skip these as zero pages. */
	memset(buf, 0xa5, buffer_pages * PAGE_BYTES);

	printf("SLS: dirty rate=%lu/10ms ready\n", kib);
	start = now_ns();
	next_tick = start + TICK_NS;
	next_report = start + REPORT_NS;
	for (;;) {
		now = now_ns();
		if (now >= next_tick) {
			for (uint64_t i = 0; i < pages_per_tick; i++) {
				*(volatile uint64_t *)(buf + pos * PAGE_BYTES) = ticks + 1;
				if (++pos == buffer_pages)
					pos = 0;
			}
			ticks++;
			next_tick += TICK_NS;
			/* More than one period behind: skip, count, and rebase. */
			if (now >= next_tick + TICK_NS) {
				late += (now - next_tick) / TICK_NS;
				next_tick = now + TICK_NS;
			}
		}
		if (now >= next_report) {
			printf("SLS: dirty work=%" PRIu64 " t=%" PRIu64 " ticks=%" PRIu64 " late=%" PRIu64 "\n",
			       work, (now - start) / 1000000, ticks, late);
			next_report += REPORT_NS;
			if (now >= next_report)
				next_report = now + REPORT_NS;
		}
		work_unit(work);
		work++;
	}
}
