// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-clonecheck [MIB]: clones and restores, seen from inside the guest.
 *
 * Keeps a buffer (default 16 MiB) whose first word is a key and whose other
 * words are a pattern derived from it. Every time the device generation
 * changes (SLSVIRT_IOC_GET_GENERATION, SLSVIRT_GEN_WAIT) -- this VM was
 * restored, or is one of several clones of one epoch -- it
 *   checks the buffer against its key     "SLS: clonecheck gen=G restored key=K ok"
 *                                         (or "... FAILED at word W")
 *   rewrites it under a key of its own    "SLS: clonecheck gen=G wrote key=G persisted epoch=E"
 *   and checks it again after 3 s         "SLS: clonecheck gen=G own writes ok" (or FAILED)
 * so clones that shared written memory would see each other's key. The first
 * buffer is written and persisted at start ("SLS: clonecheck ready key=K
 * persisted epoch=E").
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "slsvirt.h"

static uint64_t pattern_word(uint64_t key, uint64_t index)
{
	uint64_t z = key + (index + 1) * 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill(uint64_t *buf, size_t words, uint64_t key)
{
	buf[0] = key;
	for (size_t i = 1; i < words; i++)
		buf[i] = pattern_word(key, i);
}

/* Index of the first word that does not match buf[0]'s pattern, or 0. */
static size_t check(const uint64_t *buf, size_t words)
{
	for (size_t i = 1; i < words; i++)
		if (buf[i] != pattern_word(buf[0], i))
			return i;
	return 0;
}

static int generation(int fd, uint64_t seen, int wait, uint64_t *gen)
{
	struct slsvirt_generation g = {.flags = wait ? SLSVIRT_GEN_WAIT : 0, .generation = seen};

	while (ioctl(fd, SLSVIRT_IOC_GET_GENERATION, &g) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	*gen = g.generation;
	return 0;
}

int main(int argc, char **argv)
{
	size_t bytes = (argc > 1 ? strtoul(argv[1], NULL, 10) : 16) << 20;
	size_t words = bytes / sizeof(uint64_t);
	uint64_t gen = 0, epoch = 0, key;
	uint64_t *buf;
	int fd, ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = slsvirt_open();
	if (fd < 0) {
		printf("SLS: clonecheck cannot open /dev/slsvirt: %s\n", strerror(-fd));
		return 1;
	}
	buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED) {
		printf("SLS: clonecheck mmap: %s\n", strerror(errno));
		return 1;
	}
	ret = generation(fd, 0, 0, &gen);
	if (ret) {
		printf("SLS: clonecheck GET_GENERATION: %s\n", strerror(-ret));
		return 1;
	}
	key = gen ^ 0x5eedull;
	fill(buf, words, key);
	ret = slsvirt_persist(fd, &epoch);
	printf("SLS: clonecheck ready key=%" PRIx64 " persisted epoch=%" PRIu64 " (%s)\n", key, epoch,
	       ret ? strerror(-ret) : "ok");
	for (;;) {
		size_t bad;

		ret = generation(fd, gen, 1, &gen);
		if (ret) {
			printf("SLS: clonecheck GET_GENERATION wait: %s\n", strerror(-ret));
			return 1;
		}
		bad = check(buf, words);
		if (bad)
			printf("SLS: clonecheck gen=%" PRIx64 " restored key=%" PRIx64 " FAILED at word %zu\n", gen,
			       buf[0], bad);
		else
			printf("SLS: clonecheck gen=%" PRIx64 " restored key=%" PRIx64 " ok\n", gen, buf[0]);
		fill(buf, words, gen);
		ret = slsvirt_persist(fd, &epoch);
		printf("SLS: clonecheck gen=%" PRIx64 " wrote key=%" PRIx64 " persisted epoch=%" PRIu64 " (%s)\n", gen,
		       gen, epoch, ret ? strerror(-ret) : "ok");
		sleep(3);
		bad = check(buf, words);
		if (bad || buf[0] != gen)
			printf("SLS: clonecheck gen=%" PRIx64 " own writes FAILED (key %" PRIx64 ", word %zu)\n", gen,
			       buf[0], bad);
		else
			printf("SLS: clonecheck gen=%" PRIx64 " own writes ok\n", gen);
	}
}
