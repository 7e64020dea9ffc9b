// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-pattern SEED: integration workload.
 *
 *   fill 64 MiB with a pattern derived from SEED   "SLS: pattern written seed=S crc=C"
 *   PERSIST                                         "SLS: pattern persisted epoch=E"
 *   verify the buffer against the pattern           "SLS: pattern verify ok crc=C"
 *                                                   or "SLS: pattern verify FAILED at offset X"
 *   overwrite it from another seed, not persisted   "SLS: pattern dirtied"
 *   then idle                                       "SLS: alive t=<n>" about every second
 *
 * Restored from the epoch PERSIST returned, the process is back inside
 * PERSIST with the pattern in memory, so it prints "persisted" and the
 * verify line again: the verify line is what the integration test checks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "slsvirt.h"

#define PATTERN_BYTES	(64ul << 20)
#define PATTERN_WORDS	(PATTERN_BYTES / sizeof(uint64_t))

/* splitmix64 of (seed, index): random access, so any word can be checked alone. */
static uint64_t pattern_word(uint64_t seed, uint64_t index)
{
	uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* CRC-32 (IEEE 802.3, as zlib), slicing-by-8. */
static uint32_t crc_table[8][256];

static void crc32_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^
					  crc_table[0][crc_table[k - 1][i] & 0xff];
}

/* @crc is the running value, starting at 0 (pre/post inversion done here). */
static uint32_t crc32_update(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
	for (; len >= 8; len -= 8, p += 8) {
		uint32_t lo, hi;

		memcpy(&lo, p, 4);
		memcpy(&hi, p + 4, 4);
		lo ^= crc;
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		      crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
	}
	while (len--)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void fill(uint64_t *buf, uint64_t seed)
{
	for (size_t i = 0; i < PATTERN_WORDS; i++)
		buf[i] = pattern_word(seed, i);
}

int main(int argc, char **argv)
{
	uint64_t seed, epoch, *buf;
	uint32_t crc;
	size_t bad = PATTERN_WORDS;
	char *end;
	int fd, ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 2 || (seed = strtoull(argv[1], &end, 0), *end) || !*argv[1]) {
		fprintf(stderr, "usage: sls-pattern SEED\n");
		return 2;
	}
	crc32_init();
	if (crc32_update(0, "123456789", 9) != 0xcbf43926u) {
		printf("SLS: pattern crc32 self-test FAILED\n");
		return 1;
	}

	fd = slsvirt_open();
	if (fd < 0) {
		printf("SLS: pattern cannot open %s: %s\n", SLSVIRT_DEV_PATH, strerror(errno));
		return 1;
	}
	buf = mmap(NULL, PATTERN_BYTES, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED) {
		printf("SLS: pattern cannot map %lu bytes: %s\n", PATTERN_BYTES, strerror(errno));
		return 1;
	}

	fill(buf, seed);
	crc = crc32_update(0, buf, PATTERN_BYTES);
	printf("SLS: pattern written seed=%" PRIu64 " crc=0x%08x\n", seed, crc);

	do
		ret = slsvirt_persist(fd, &epoch);
	while (ret < 0 && errno == EINTR);
	if (ret < 0) {
		printf("SLS: pattern persist FAILED: %s\n", strerror(errno));
		return 1;
	}
	printf("SLS: pattern persisted epoch=%" PRIu64 "\n", epoch);

	for (size_t i = 0; i < PATTERN_WORDS; i++) {
		if (buf[i] != pattern_word(seed, i)) {
			bad = i;
			break;
		}
	}
	if (bad == PATTERN_WORDS)
		printf("SLS: pattern verify ok crc=0x%08x\n", crc32_update(0, buf, PATTERN_BYTES));
	else
		printf("SLS: pattern verify FAILED at offset 0x%zx\n", bad * sizeof(uint64_t));

	fill(buf, ~seed);
	printf("SLS: pattern dirtied\n");

	for (unsigned long t = 1;; t++) {
		sleep(1);
		printf("SLS: alive t=%lu\n", t);
	}
}
