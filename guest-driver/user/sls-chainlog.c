// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-chainlog [-m MiB] [-k K] [-r RATE] [-v MS]: the crash-torture workload.
 *
 * Keeps a hash-chained log in a MiB-sized ring (default 32 MiB) of 64-byte
 * entries {seq, prev_hash, payload[5], hash}. Entry `seq` lives in slot
 * seq % nr_slots; its hash covers seq, prev_hash and the payload and is the
 * next entry's prev_hash (entry 0 links to CHAIN_GENESIS).
 *
 * Hash: 64-bit FNV-1a taken word-wise (h ^= word; h *= FNV prime, over the
 * entry's first seven 64-bit words) with splitmix64's finalizer on top. It
 * is not cryptographic: it only has to notice an entry that is torn, stale
 * or from another point in time (a restore that mixes pages of two epochs).
 *
 * Two threads:
 *  - the appender writes entries at RATE per second (default 20000; 0 = as
 *    fast as it can), in program order: the entry's fields, then its hash,
 *    then `head` (number of complete entries). A capture that stops the vCPU
 *    in between leaves at most the slot at `head` torn;
 *  - the persister calls PERSIST whenever at least K (default 64) entries
 *    were added since its last call, and prints
 *        "SLS: chain seq=<S> epoch=<E> acked"
 *    meaning every entry up to S is durable in epoch E (S is the newest
 *    complete entry when PERSIST was called). It records the (S, E) pairs in
 *    memory. A failed PERSIST prints "SLS: chain persist FAILED seq=<S>: <err>".
 *
 * The appender verifies the whole ring about every MS ms of guest time
 * (default 1000; 0 = only when a restore was noticed) and prints
 *     "SLS: chain verify ok seq=<S> ..."  or  "SLS: chain verify FAILED at <seq>: <why>"
 * Verify: every entry from the oldest kept one up to head-1 has the right
 * seq and hash and links to the one before; no slot beyond head holds a
 * complete entry newer than head (a write past a torn one); the acked pairs
 * are ordered and none claims an entry beyond head.
 *
 * A restore is transparent by design, so the program can only guess that it
 * happened: PERSIST returning an epoch not newer than one already seen, or
 * the RTC (host time under QEMU's default -rtc clock=host) jumping against
 * CLOCK_MONOTONIC (guest virtual time, which stops while QEMU is dead) by
 * 2 s or more. Either prints "SLS: chain restored? <why>" and verifies at once.
 * The periodic verify does not depend on that guess.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "sls-clock.h"
#include "slsvirt.h"

#define CHAIN_GENESIS	0x534c53636861696eull	/* "SLSchain" */
#define FNV_OFFSET	0xcbf29ce484222325ull
#define FNV_PRIME	0x100000001b3ull
#define ACKED_MAX	8192			/* newest acked pairs kept */

struct chain_entry {
	uint64_t seq;
	uint64_t prev_hash;
	uint64_t payload[5];	/* [0] guest CLOCK_MONOTONIC ns, [1..4] from seq */
	uint64_t hash;		/* written last */
};
_Static_assert(sizeof(struct chain_entry) == 64, "one entry is 64 bytes");

struct acked {
	uint64_t seq;
	uint64_t epoch;
};

static struct chain_entry *ring;
static uint64_t nr_slots;
/* Number of complete entries (= seq of the next one). Only the appender writes it. */
static _Atomic uint64_t head;

static pthread_mutex_t acked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct acked acked_log[ACKED_MAX];	/* ring; guarded by acked_lock */
static uint64_t nr_acked;
static atomic_bool verify_now;

#define barrier()	__asm__ __volatile__("" ::: "memory")

static uint64_t splitmix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t entry_hash(const struct chain_entry *e)
{
	const uint64_t *w = (const uint64_t *)e;
	uint64_t h = FNV_OFFSET;

	for (int i = 0; i < 7; i++)
		h = (h ^ w[i]) * FNV_PRIME;
	return splitmix(h);
}

static void append(uint64_t seq, uint64_t *prev_hash)
{
	struct chain_entry *e = &ring[seq % nr_slots];

	e->seq = seq;
	e->prev_hash = *prev_hash;
	e->payload[0] = mono_ns();
	for (int i = 1; i < 5; i++)
		e->payload[i] = splitmix(seq * 4 + (uint64_t)i);
	barrier();
	e->hash = entry_hash(e);
	barrier();
	*prev_hash = e->hash;
	atomic_store(&head, seq + 1);
}

/* Returns the number of complete entries checked; prints the verdict. */
static int verify(uint64_t *prev_hash)
{
	uint64_t h = atomic_load(&head);
	uint64_t first = h > nr_slots ? h - nr_slots : 0;
	uint64_t link = first ? 0 : CHAIN_GENESIS;
	uint64_t t0 = mono_ns(), last_seq = 0, last_epoch = 0, acked_n, bad_at;
	const char *why = NULL;

	/* The oldest kept entry's predecessor is overwritten: its link is not checked. */
	for (uint64_t s = first; s < h && !why; s++) {
		const struct chain_entry *e = &ring[s % nr_slots];

		if (e->seq != s)
			why = "wrong seq in slot", bad_at = s;
		else if (e->hash != entry_hash(e))
			why = "hash mismatch", bad_at = s;
		else if ((s != first || !first) && e->prev_hash != link)
			why = "prev_hash does not link", bad_at = s;
		link = e->hash;
	}
	if (!why && h && *prev_hash != link)
		why = "appender's last hash is not the newest entry's", bad_at = h - 1;
	/*
	 * Beyond head: the slot at head may be torn or even complete (written,
	 * head not yet moved); anything after it must be an older lap or empty.
	 */
	for (uint64_t i = 1; i < nr_slots && !why; i++) {
		uint64_t s = h + i;
		const struct chain_entry *e = &ring[s % nr_slots];

		if (e->seq > h && e->hash == entry_hash(e))
			why = "complete entry beyond head", bad_at = e->seq;
	}
	pthread_mutex_lock(&acked_lock);
	acked_n = nr_acked;
	for (uint64_t i = acked_n > ACKED_MAX ? acked_n - ACKED_MAX : 0; i < acked_n && !why; i++) {
		const struct acked *a = &acked_log[i % ACKED_MAX];

		if (a->seq >= h)
			why = "acked entry beyond head", bad_at = a->seq;
		else if (a->seq < last_seq || a->epoch < last_epoch)
			why = "acked pairs out of order", bad_at = a->seq;
		last_seq = a->seq;
		last_epoch = a->epoch;
	}
	pthread_mutex_unlock(&acked_lock);

	if (why) {
		printf("SLS: chain verify FAILED at %" PRIu64 ": %s (head=%" PRIu64 ")\n", bad_at, why, h);
		return -1;
	}
	printf("SLS: chain verify ok seq=%" PRId64 " entries=%" PRIu64 " acked=%" PRIu64
	       " last-acked-seq=%" PRIu64 " epoch=%" PRIu64 " took=%" PRIu64 "ms\n",
	       (int64_t)h - 1, h - first, acked_n, last_seq, last_epoch, (mono_ns() - t0) / 1000000);
	return 0;
}

struct persister_args {
	int fd;
	uint64_t k;
};

static void *persister(void *p)
{
	const struct persister_args *pa = p;
	uint64_t last_head = 0, last_epoch = 0;
	int rtc_fd = open("/dev/rtc0", O_RDONLY | O_CLOEXEC);
	int64_t offset = rtc_offset(rtc_fd);
	uint64_t next_clock_check = mono_ns() + 500000000ull;

	for (;;) {
		uint64_t h = atomic_load(&head), epoch = 0;
		struct timespec ms = {0, 1000000};

		if (mono_ns() >= next_clock_check) {
			int64_t now = rtc_offset(rtc_fd);

			if (offset != INT64_MIN && now != INT64_MIN && (now - offset >= 2 || offset - now >= 2)) {
				printf("SLS: chain restored? host clock jumped %+" PRId64 " s against guest time\n",
				       now - offset);
				atomic_store(&verify_now, true);
			}
			offset = now;
			next_clock_check = mono_ns() + 500000000ull;
		}
		if (h == 0 || h - last_head < pa->k) {
			nanosleep(&ms, NULL);
			continue;
		}
		if (slsvirt_persist(pa->fd, &epoch) < 0) {
			if (errno == EINTR)
				continue;
			printf("SLS: chain persist FAILED seq=%" PRIu64 ": %s\n", h - 1, strerror(errno));
			last_head = h;
			nanosleep(&ms, NULL);
			continue;
		}
		pthread_mutex_lock(&acked_lock);
		acked_log[nr_acked % ACKED_MAX] = (struct acked){h - 1, epoch};
		nr_acked++;
		pthread_mutex_unlock(&acked_lock);
		printf("SLS: chain seq=%" PRIu64 " epoch=%" PRIu64 " acked\n", h - 1, epoch);
		if (epoch <= last_epoch) {
			printf("SLS: chain restored? PERSIST returned epoch %" PRIu64 " after %" PRIu64 "\n",
			       epoch, last_epoch);
			atomic_store(&verify_now, true);
		}
		last_epoch = epoch;
		last_head = h;
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: sls-chainlog [-m MiB] [-k K] [-r RATE] [-v MS]\n");
	exit(2);
}

static uint64_t number(const char *s)
{
	char *end;
	uint64_t v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (!*s || *end || errno)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	uint64_t mib = 32, rate = 20000, verify_ms = 1000, prev_hash = CHAIN_GENESIS;
	struct persister_args pa = {.k = 64};
	uint64_t t_start, next_verify;
	pthread_t thr;
	int opt;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((opt = getopt(argc, argv, "m:k:r:v:")) != -1) {
		switch (opt) {
		case 'm': mib = number(optarg); break;
		case 'k': pa.k = number(optarg); break;
		case 'r': rate = number(optarg); break;
		case 'v': verify_ms = number(optarg); break;
		default: usage();
		}
	}
	if (optind != argc || !mib || mib > 4096 || !pa.k)
		usage();

	pa.fd = slsvirt_open();
	if (pa.fd < 0) {
		printf("SLS: chain cannot open %s: %s\n", SLSVIRT_DEV_PATH, strerror(errno));
		return 1;
	}
	nr_slots = (mib << 20) / sizeof(struct chain_entry);
	ring = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (ring == MAP_FAILED) {
		printf("SLS: chain cannot map %" PRIu64 " MiB: %s\n", mib, strerror(errno));
		return 1;
	}
	printf("SLS: chain start ring=%" PRIu64 "MiB slots=%" PRIu64 " k=%" PRIu64 " rate=%" PRIu64
	       "/s verify-ms=%" PRIu64 "\n", mib, nr_slots, pa.k, rate, verify_ms);
	if (pthread_create(&thr, NULL, persister, &pa)) {
		printf("SLS: chain cannot start the persister thread\n");
		return 1;
	}

	t_start = mono_ns();
	next_verify = t_start + verify_ms * 1000000ull;
	for (uint64_t seq = 0;; ) {
		/* Bursts of 64 entries (one 4 KiB page), paced to `rate` per second. */
		for (int i = 0; i < 64; i++, seq++)
			append(seq, &prev_hash);
		if (atomic_exchange(&verify_now, false) ||
		    (verify_ms && mono_ns() >= next_verify)) {
			verify(&prev_hash);
			next_verify = mono_ns() + verify_ms * 1000000ull;
		}
		if (rate) {
			uint64_t due = t_start + seq * 1000000000ull / rate, now = mono_ns();

			if (now > due + 50000000ull) {
				/* More than 50 ms behind (e.g. after a pause): resync, don't burst. */
				t_start = now - seq * 1000000000ull / rate;
			} else if (due > now) {
				struct timespec ts = {0, (long)(due - now)};

				nanosleep(&ts, NULL);
			}
		}
	}
}
