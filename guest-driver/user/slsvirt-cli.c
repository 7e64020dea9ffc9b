// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * slsvirt: command-line access to /dev/slsvirt.
 *   slsvirt info      print device and checkpoint state
 *   slsvirt persist   durability barrier; prints the durable epoch
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "slsvirt.h"

static int usage(FILE *out)
{
	fprintf(out, "usage: slsvirt info|persist\n"
		     "  info     print device version and checkpoint state\n"
		     "  persist  wait until all memory written so far is durable; print the epoch\n");
	return out == stderr ? 2 : 0;
}

static int cmd_info(int fd)
{
	struct slsvirt_info info;

	if (slsvirt_info(fd, &info) < 0) {
		fprintf(stderr, "slsvirt: GET_INFO: %s\n", strerror(errno));
		return 1;
	}
	printf("dev_version=%u proto_version=%u host_status=%#x%s durable_epoch=%" PRIu64
	       " current_epoch=%" PRIu64 "\n",
	       info.dev_version, info.proto_version, info.host_status,
	       (info.host_status & SLSVIRT_INFO_CHECKPOINTING) ? " (checkpointing)" : "",
	       (uint64_t)info.durable_epoch, (uint64_t)info.current_epoch);
	return 0;
}

static int cmd_persist(int fd)
{
	uint64_t epoch;

	if (slsvirt_persist(fd, &epoch) < 0) {
		fprintf(stderr, "slsvirt: PERSIST: %s\n", strerror(errno));
		return 1;
	}
	printf("%" PRIu64 "\n", epoch);
	return 0;
}

int main(int argc, char **argv)
{
	int fd;

	if (argc != 2)
		return usage(stderr);
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		return usage(stdout);
	if (strcmp(argv[1], "info") && strcmp(argv[1], "persist"))
		return usage(stderr);

	fd = slsvirt_open();
	if (fd < 0) {
		fprintf(stderr, "slsvirt: %s: %s\n", SLSVIRT_DEV_PATH, strerror(errno));
		return 1;
	}
	return !strcmp(argv[1], "info") ? cmd_info(fd) : cmd_persist(fd);
}
