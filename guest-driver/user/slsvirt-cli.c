// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * slsvirt: command-line access to /dev/slsvirt.
 *   slsvirt info                     device and checkpoint state
 *   slsvirt epoch                    current, durable and failed epoch
 *   slsvirt persist                  durability barrier; prints the durable epoch
 *   slsvirt persist --async          take a ticket, print it, wait for it
 *   slsvirt persist --async --no-wait  take a ticket, print it, exit
 *   slsvirt mem                      memory elasticity: device and driver view
 * Exit status: 0 success, 1 error, 2 usage, 3 the host is not checkpointing
 * or the checkpoint failed (EIO).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "slsvirt.h"

enum { EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_DURABLE };

static int usage(FILE *out)
{
	fprintf(out, "usage: slsvirt info | epoch | mem | persist [--async [--no-wait]]\n"
		     "  info     print device version and checkpoint state\n"
		     "  epoch    print current_epoch (the next capture), durable_epoch and failed_epoch\n"
		     "  mem      print memory elasticity: RAM, released (device), target, ceiling,\n"
		     "           released by the driver and in elastic regions (bytes)\n"
		     "  persist  wait until all memory written so far is durable; print the epoch\n"
		     "    --async    take a ticket at once (prints \"ticket T\"), then wait for its\n"
		     "               completion (prints \"durable E\")\n"
		     "    --no-wait  with --async: exit after printing the ticket; the writes are\n"
		     "               durable once 'slsvirt epoch' shows durable_epoch >= T\n"
		     "exit status: 0 ok, 1 error, 2 usage, 3 host not checkpointing or checkpoint failed\n");
	return out == stderr ? EXIT_USAGE : EXIT_OK;
}

static int fail(const char *what)
{
	int err = errno;

	fprintf(stderr, "slsvirt: %s: %s%s\n", what, strerror(err),
		err == EIO ? " (host not checkpointing, or the checkpoint failed)" : "");
	return err == EIO ? EXIT_NOT_DURABLE : EXIT_ERROR;
}

static const char *status_text(uint32_t host_status)
{
	return (host_status & SLSVIRT_INFO_CHECKPOINTING) ? " (checkpointing)" : " (not checkpointing)";
}

static int cmd_info(int fd)
{
	struct slsvirt_info info;

	if (slsvirt_info(fd, &info) < 0)
		return fail("GET_INFO");
	printf("dev_version=%u proto_version=%u host_status=%#x%s durable_epoch=%" PRIu64
	       " current_epoch=%" PRIu64 "\n",
	       info.dev_version, info.proto_version, info.host_status,
	       (info.host_status & SLSVIRT_INFO_CHECKPOINTING) ? " (checkpointing)" : "",
	       (uint64_t)info.durable_epoch, (uint64_t)info.current_epoch);
	return EXIT_OK;
}

static int cmd_epoch(int fd)
{
	struct slsvirt_epoch_info ei;

	if (slsvirt_get_epoch(fd, &ei) < 0)
		return fail("GET_EPOCH");
	printf("current_epoch=%" PRIu64 " durable_epoch=%" PRIu64 " failed_epoch=%" PRIu64
	       " host_status=%#x%s\n", (uint64_t)ei.current_epoch, (uint64_t)ei.durable_epoch,
	       (uint64_t)ei.failed_epoch, ei.host_status, status_text(ei.host_status));
	return EXIT_OK;
}

static int cmd_mem(int fd)
{
	struct slsvirt_mem_info mi;

	if (slsvirt_mem_info(fd, &mi) < 0)
		return fail("MEM_INFO");
	printf("ram=%" PRIu64 " released=%" PRIu64 " target_released=%" PRIu64
	       " ceiling=%" PRIu64 " driver_released=%" PRIu64 " region_released=%" PRIu64
	       " shrinker_reclaimed=%" PRIu64 "\n",
	       (uint64_t)mi.ram, (uint64_t)mi.released, (uint64_t)mi.target_released,
	       (uint64_t)mi.ceiling, (uint64_t)mi.driver_released,
	       (uint64_t)mi.region_released, (uint64_t)mi.shrinker_reclaimed);
	return EXIT_OK;
}

static int cmd_persist(int fd, bool async, bool no_wait)
{
	uint64_t epoch, ticket;

	if (!async) {
		if (slsvirt_persist(fd, &epoch) < 0)
			return fail("PERSIST");
		printf("%" PRIu64 "\n", epoch);
		return EXIT_OK;
	}
	if (slsvirt_persist_async(fd, &ticket) < 0)
		return fail("PERSIST (async)");
	printf("ticket %" PRIu64 "\n", ticket);
	fflush(stdout);
	if (no_wait)
		return EXIT_OK;
	if (slsvirt_wait(fd, ticket, -1, &epoch) < 0)
		return fail("waiting for the ticket");
	printf("durable %" PRIu64 "\n", epoch);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	bool async = false, no_wait = false;
	const char *cmd;
	int fd;

	if (argc < 2)
		return usage(stderr);
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help"))
		return usage(stdout);
	for (int i = 2; i < argc; i++) {
		if (!strcmp(cmd, "persist") && !strcmp(argv[i], "--async"))
			async = true;
		else if (!strcmp(cmd, "persist") && !strcmp(argv[i], "--no-wait"))
			no_wait = true;
		else
			return usage(stderr);
	}
	if ((strcmp(cmd, "info") && strcmp(cmd, "persist") && strcmp(cmd, "epoch") &&
	     strcmp(cmd, "mem")) ||
	    (no_wait && !async))
		return usage(stderr);

	fd = slsvirt_open();
	if (fd < 0) {
		fprintf(stderr, "slsvirt: %s: %s\n", SLSVIRT_DEV_PATH, strerror(errno));
		return EXIT_ERROR;
	}
	if (!strcmp(cmd, "info"))
		return cmd_info(fd);
	if (!strcmp(cmd, "epoch"))
		return cmd_epoch(fd);
	if (!strcmp(cmd, "mem"))
		return cmd_mem(fd);
	return cmd_persist(fd, async, no_wait);
}
