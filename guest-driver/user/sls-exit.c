// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-exit pass|fail|VALUE: end QEMU through isa-debug-exit
 * (-device isa-debug-exit,iobase=0xf4,iosize=0x04). Writing byte v to port
 * 0xf4 makes QEMU exit with status (v << 1) | 1: pass = 0x10 -> 33,
 * fail = 0x11 -> 35. Returns (status 1) only if there is no such device.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>

#define DEBUG_EXIT_PORT	0xf4
#define EXIT_PASS	0x10
#define EXIT_FAIL	0x11

int main(int argc, char **argv)
{
	unsigned long value;
	char *end;

	if (argc != 2) {
		fprintf(stderr, "usage: sls-exit pass|fail|VALUE\n");
		return 2;
	}
	if (!strcmp(argv[1], "pass")) {
		value = EXIT_PASS;
	} else if (!strcmp(argv[1], "fail")) {
		value = EXIT_FAIL;
	} else {
		value = strtoul(argv[1], &end, 0);
		if (*end || value > 0xff) {
			fprintf(stderr, "sls-exit: bad value %s\n", argv[1]);
			return 2;
		}
	}
	if (ioperm(DEBUG_EXIT_PORT, 1, 1) < 0) {
		fprintf(stderr, "sls-exit: ioperm: %s\n", strerror(errno));
		return 1;
	}
	outb(value, DEBUG_EXIT_PORT);
	fprintf(stderr, "sls-exit: still running: no isa-debug-exit at %#x?\n", DEBUG_EXIT_PORT);
	return 1;
}
