// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-service [MIB] [TTY]: a tiny request/response service (bench/run restore).
 *
 * Holds a working set of MIB MiB (default 8) and answers every line it
 * reads on TTY (default /dev/ttyS1, a host socket chardev) with
 *   "pong <n> <sum>\n"
 * where sum is a checksum over the whole working set, so answering touches
 * every page of it: a restored VM answers only once those pages are back.
 * Prints "SLS: service ready mib=M sum=S" on stdout when it listens.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

static uint64_t checksum(const uint64_t *buf, size_t words)
{
	uint64_t s = 0;

	/* One word per 64 bytes: every page touched, little CPU spent. */
	for (size_t i = 0; i < words; i += 8)
		s = (s ^ buf[i]) * 0x100000001b3ull;
	return s;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 8;
	const char *tty = argc > 2 ? argv[2] : "/dev/ttyS1";
	size_t words = (mib << 20) / sizeof(uint64_t);
	uint64_t *buf, n = 0, sum;
	struct termios t;
	char line[256];
	size_t len = 0;
	int fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	buf = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		printf("SLS: service mmap: %s\n", strerror(errno));
		return 1;
	}
	for (size_t i = 0; i < words; i++)
		buf[i] = i * 0x9e3779b97f4a7c15ull + 1;
	fd = open(tty, O_RDWR | O_NOCTTY);
	if (fd < 0 || tcgetattr(fd, &t) < 0) {
		printf("SLS: service %s: %s\n", tty, strerror(errno));
		return 1;
	}
	cfmakeraw(&t);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	tcsetattr(fd, TCSANOW, &t);
	sum = checksum(buf, words);
	printf("SLS: service ready mib=%zu sum=%" PRIx64 "\n", mib, sum);
	for (;;) {
		char c;
		ssize_t r = read(fd, &c, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			printf("SLS: service read: %s\n", r ? strerror(errno) : "EOF");
			return 1;
		}
		if (c != '\n' && c != '\r') {
			if (len < sizeof(line) - 1)
				line[len++] = c;
			continue;
		}
		if (!len)
			continue;
		len = 0;
		sum = checksum(buf, words);
		int k = snprintf(line, sizeof(line), "pong %" PRIu64 " %" PRIx64 "\n", ++n, sum);
		if (write(fd, line, (size_t)k) != k)
			printf("SLS: service write: %s\n", strerror(errno));
	}
}
