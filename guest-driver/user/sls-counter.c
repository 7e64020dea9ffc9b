// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-counter: the demo workload. Keeps a counter in memory, increments it
 * about 1000 times a second and every N increments (argv[1], default 5000)
 * calls PERSIST, then prints
 *     SLS: counter=<value> epoch=<E> persisted
 * <value> is the counter as it was when PERSIST was called, printed only
 * after PERSIST succeeded. Restored from that epoch, the process is back
 * inside PERSIST with that value in memory, so its next line repeats it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "slsvirt.h"

#define TARGET_PER_SECOND 1000

static volatile uint64_t spin_sink;

static void spin(uint64_t loops)
{
	for (uint64_t i = 0; i < loops; i++)
		spin_sink++;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Busy loops per increment for ~TARGET_PER_SECOND increments a second.
 * Calibrated once at start, so a clock that jumps on restore cannot stall
 * the loop later.
 */
static uint64_t calibrate(void)
{
	uint64_t loops = 0, chunk = 1000;
	double start = now_seconds(), elapsed;

	do {
		spin(chunk);
		loops += chunk;
		elapsed = now_seconds() - start;
	} while (elapsed < 0.05);
	return (uint64_t)(loops / elapsed / TARGET_PER_SECOND) + 1;
}

/* PERSIST, restarted after a signal (nothing is lost by calling it again). */
static int persist(int fd, uint64_t *epoch)
{
	int ret;

	do
		ret = slsvirt_persist(fd, epoch);
	while (ret < 0 && errno == EINTR);
	return ret;
}

int main(int argc, char **argv)
{
	uint64_t every = 5000, counter = 0, epoch, delay;
	char *end;
	int fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 2 || (argc == 2 && ((every = strtoull(argv[1], &end, 0)) == 0 || *end))) {
		fprintf(stderr, "usage: sls-counter [persist-every-N-increments > 0]\n");
		return 2;
	}

	fd = slsvirt_open();
	if (fd < 0) {
		printf("SLS: counter cannot open %s: %s\n", SLSVIRT_DEV_PATH, strerror(errno));
		return 1;
	}
	delay = calibrate();
	printf("SLS: counter starting at %" PRIu64 "\n", counter);

	for (;;) {
		spin(delay);
		counter++;
		if (counter % every)
			continue;

		if (persist(fd, &epoch) < 0) {
			printf("SLS: counter=%" PRIu64 " persist FAILED: %s\n", counter,
			       strerror(errno));
			continue;
		}
		printf("SLS: counter=%" PRIu64 " epoch=%" PRIu64 " persisted\n", counter, epoch);
	}
}
