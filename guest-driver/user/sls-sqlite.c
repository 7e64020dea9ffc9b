// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-sqlite: SQLite made durable by slsvirt's PERSIST instead of fsync.
 *
 *   sls-sqlite run    [-m persist|fsync|none] [-d DB] [-c CLIENTS] [-n TXNS] [-t SECONDS]
 *                     [-v VERIFY_MS] [-q]
 *   sls-sqlite verify [-m persist|fsync|none] [-d DB] [-u UPTO]
 *   sls-sqlite bench  [-m persist|fsync|none] [-d DB] [-c N:N:...] [-t SECONDS] [-l SAMPLES]
 *                     [-f LATFILE]
 *
 * Durability (`-m persist`, the default): group commit on whole-VM
 * checkpoints. The database lives in guest memory (the initramfs' rootfs,
 * default /tmp/sls.db), and slsvirt checkpoints the whole VM (every
 * process's memory, the kernel, this file's pages) as one consistent
 * snapshot that, after a crash, is restored and keeps running. So SQLite
 * needs no write-ahead protocol of its own for crash consistency: a
 * transaction a crash interrupts is not torn, it continues after the
 * restore, in the process that was running it. The one rule left is the
 * output commit: a client is told "committed" (the ack line) only after a
 * PERSIST that was issued after its COMMIT returned. PERSIST returns once
 * every write made before the call is in a durable epoch; COMMIT has
 * written every page of the transaction by then, so the acked transaction
 * is in every epoch the host may restore from then on.
 *
 * A client that read data committed but not yet acked (every transaction
 * here reads max(id), i.e. its predecessor's commit) is safe too: the
 * snapshot is one cut through the whole VM, so an epoch that lacks the
 * predecessor's commit lacks everything that happened after it (the read,
 * the dependent commit, any ack). And the dependent transaction's own ack
 * waits for a PERSIST issued after its commit, hence after its
 * predecessor's: that epoch covers both. The same holds for the verifier's
 * "verify ok max=M" lines: diagnostics, not acks; M may include unacked
 * commits that a restore takes back, together with the line itself.
 *
 * Settings (persist): journal_mode=WAL, synchronous=OFF, the stock "unix"
 * VFS. The WAL now only serves what a journal still has to: ROLLBACK
 * (frames of an unfinished transaction are ignored) and snapshot reads for
 * the verifier, which never block the writers (journal_mode=MEMORY would
 * make the verifier's read transaction stall every commit, and measured
 * slower in bench/run persist anyway). synchronous=OFF:
 * a sync cannot add durability to a file in guest RAM; durability is the
 * PERSIST after COMMIT, outside SQLite's write lock. The earlier "slsvirt"
 * VFS (xSync = PERSIST) is gone: with synchronous=OFF SQLite never calls
 * xSync, and a PERSIST inside the commit held the write lock for an epoch,
 * so clients serialized and never shared one. Now each client's PERSIST
 * runs after it released the lock, concurrent PERSISTs coalesce onto one
 * epoch (the device's ticket is the next capture), and N clients can share
 * one epoch wait (bench/README.md has how many do). `-m persist` is only sound for a
 * database in guest memory (a disk the VM snapshot does not hold would
 * need its own syncs).
 *
 * `-m fsync` is stock SQLite for a database on a real disk: the unix VFS,
 * WAL, synchronous=FULL (each commit fdatasyncs the WAL before COMMIT
 * returns, under the write lock), the ack printed after COMMIT.
 *
 * Workload (`run`): CLIENTS threads, one connection each, taking turns
 * (a mutex) for small write transactions
 *     BEGIN IMMEDIATE; id = max(kv.id) + 1;
 *     INSERT INTO kv(id, client, val) VALUES (id, client, value_of(id));
 *     UPDATE clients SET n = n + 1 WHERE client = ?; COMMIT
 * Ids are taken under SQLite's write lock, so committed ids are exactly
 * 1..max with no gap. After COMMIT returns (persist: and after the
 * client's own PERSIST, issued after COMMIT, returned), it prints
 *     "SLS: sqlite ack=<id> epoch=<E> ticket=<T>"
 * T is the epoch that covers every write made before the PERSIST (the
 * device's ticket, taken after COMMIT returned), E the durable epoch the
 * PERSIST returned; E >= T or the client fails (0 0 with -m fsync; -q: no
 * ack lines). "SLS: sqlite start ..." and "SLS: sqlite done txns=N ..."
 * bracket a run with -n or -t (the host times them: the guest clock stops
 * while a capture pauses the vCPUs); the done line's epochs=<N> counts the
 * distinct tickets the run's PERSISTs got (about how many epochs its
 * commits shared).
 *
 * Verify (the verifier thread of `run` every VERIFY_MS ms of guest time and
 * when a restore is suspected; `verify` once): a new connection, one read
 * transaction, PRAGMA integrity_check must say "ok"; ids must be 1..max
 * with no gap and each value must be value_of(id); every client's counter
 * must equal its number of rows (the two statements of a transaction are
 * all or nothing). Each row also keeps `born`, the RTC second (host time)
 * its transaction started in (0 in bench runs): consecutive ids whose born
 * jumps by >= 2 s are where the program went on after a restore (or a long
 * stall), printed as restarts=<id>@<born>,... (newest 16). A transaction that
 * was acked and then lost by a restore would come back under the same id,
 * same value, but born after the restore: the host can tell. Prints
 *     "SLS: sqlite verify begin n=<K>"  (before the read transaction starts)
 *     "SLS: sqlite verify ok n=<K> max=<M> rows=<R> integrity=ok ..."
 *  or "SLS: sqlite verify FAILED n=<K>: <why>"
 * `verify -u UPTO` also fails unless every id up to UPTO is present.
 * A restore is transparent by design; the verifier guesses it from the RTC
 * (host time) jumping against CLOCK_MONOTONIC (guest time, stopped while
 * QEMU is down), as sls-chainlog does, and prints "SLS: sqlite restored? ...".
 *
 * Bench (`bench`): first LATENCY samples of the durability primitive alone
 * (persist: one word written, PERSIST; fsync: 4 KiB pwrite + fsync, then
 * + fdatasync, of LATFILE), then for each client count a fresh database and
 * a quiet `run` of SECONDS; with -m persist each is followed by the same run
 * in mode "none" (`-m none`: synchronous=OFF, no PERSIST, ack after COMMIT,
 * durable only by chance): what the guest's CPU allows, the ceiling of any
 * durability mechanism's throughput. Lines: "SLS: sqlite lat kind=... n=...
 * p50_us=... p99_us=..." and the start/done pairs above, then "SLS: sqlite
 * bench done".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sls-clock.h"
#include "slsvirt.h"

#define MAX_CLIENTS	64
#define VAL_LEN		48	/* bytes of kv.val: small rows */
#define BUSY_SLEEP_NS	100000	/* between tries for SQLite's write lock */
#define BUSY_GIVE_UP	600000	/* tries: ~60 s plus the holder's sync time */
#define RESTARTS_KEPT	16	/* newest restart points a verify prints */

enum mode { MODE_PERSIST, MODE_FSYNC, MODE_NONE };

struct opts {
	enum mode mode;
	const char *db;
	unsigned clients;
	uint64_t txns;		/* 0 = no limit */
	uint64_t seconds;	/* 0 = no limit */
	uint64_t verify_ms;	/* 0 = only when a restore is suspected */
	bool quiet;
};

/* The latency probe's fd (bench, persist mode); clients open their own. */
static int persist_fd = -1;

static uint64_t splitmix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The value transaction `id` stores: VAL_LEN hex digits derived from id. */
static void value_of(uint64_t id, char out[VAL_LEN + 1])
{
	snprintf(out, VAL_LEN + 1, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
		 splitmix(id), splitmix(id ^ 0x5a5a5a5aull), splitmix(~id));
}

/* ------------------------------------------------------------------ PERSIST */

/*
 * A durability barrier for what this thread has done so far: an async
 * PERSIST on @fd (so that *ticket says which epoch covers the writes), then
 * the wait for it. 0 when durable (*epoch >= *ticket), else -1 with errno
 * (EIO: the host is not checkpointing or the epoch failed). Each client has
 * its own fd: tickets and completions are per open file.
 */
static int persist_barrier(int fd, uint64_t *ticket, uint64_t *epoch)
{
	while (slsvirt_persist_async(fd, ticket) < 0) {
		if (errno != EINTR)
			return -1;
	}
	while (slsvirt_wait(fd, *ticket, -1, epoch) < 0) {
		if (errno != EINTR)	/* EINTR: the ticket stays queued */
			return -1;
	}
	if (*epoch < *ticket) {
		errno = EPROTO;
		return -1;
	}
	return 0;
}

/* The latency probe: a plain synchronous PERSIST. */
static int persist_now(void)
{
	uint64_t epoch;

	while (slsvirt_persist(persist_fd, &epoch) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ database */

static const struct opts *g_opts;
static _Atomic uint64_t committed;	/* transactions committed in this run */
/* Distinct PERSIST tickets of this run's clients, and the newest one. */
static _Atomic uint64_t ticket_epochs, newest_ticket;
/*
 * The clients of one process take turns for the write transaction. SQLite
 * admits one writer at a time anyway; without this the losers poll the lock
 * through the busy handler and N clients commit several times less than one
 * (measured in both modes). Readers (the verifier) never take it, and
 * neither does a client's PERSIST (persist mode): that wait is what the
 * clients share.
 */
static pthread_mutex_t writer_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool stop_clients;
static atomic_bool run_failed;

static const char *mode_name(void)
{
	return g_opts->mode == MODE_PERSIST ? "persist" :
	       g_opts->mode == MODE_NONE ? "none" : "fsync";
}

/* synchronous= of each mode (journal_mode is WAL in both; see the top). */
static const char *synchronous_of_mode(void)
{
	return g_opts->mode == MODE_FSYNC ? "full" : "off";
}

static int busy_wait(void *arg, int tries)
{
	struct timespec ts = {0, BUSY_SLEEP_NS};

	(void)arg;
	if (tries >= BUSY_GIVE_UP)
		return 0;
	nanosleep(&ts, NULL);
	return 1;
}

static int exec(sqlite3 *db, const char *sql, char *why, size_t why_len)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);

	if (rc != SQLITE_OK)
		snprintf(why, why_len, "%s: %s", sql, err ? err : sqlite3_errstr(rc));
	sqlite3_free(err);
	return rc;
}

static sqlite3 *open_db(const char *path, char *why, size_t why_len)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX, "unix");
	char pragma[64];

	if (rc != SQLITE_OK) {
		snprintf(why, why_len, "open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_handler(db, busy_wait, NULL);
	snprintf(pragma, sizeof(pragma), "PRAGMA synchronous=%s", synchronous_of_mode());
	if (exec(db, "PRAGMA journal_mode=WAL", why, why_len) ||
	    exec(db, pragma, why, why_len)) {
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

static int create_schema(sqlite3 *db, unsigned clients, char *why, size_t why_len)
{
	char sql[128];

	if (exec(db, "CREATE TABLE IF NOT EXISTS kv(id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
		 "val TEXT NOT NULL, born INTEGER NOT NULL)", why, why_len) ||
	    exec(db, "CREATE TABLE IF NOT EXISTS clients(client INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
		 why, why_len))
		return -1;
	for (unsigned c = 0; c < clients; c++) {
		snprintf(sql, sizeof(sql), "INSERT OR IGNORE INTO clients VALUES(%u, 0)", c);
		if (exec(db, sql, why, why_len))
			return -1;
	}
	return 0;
}


struct client_args {
	unsigned id;
	pthread_t thr;
};

static void *client_main(void *p)
{
	const struct client_args *ca = p;
	sqlite3_stmt *max_st = NULL, *ins = NULL, *upd = NULL;
	/* bench runs skip the RTC read: born = 0 */
	int rtc_fd = g_opts->quiet ? -1 : open("/dev/rtc0", O_RDONLY | O_CLOEXEC);
	char why[256] = "", val[VAL_LEN + 1];
	int pfd = g_opts->mode == MODE_PERSIST ? slsvirt_open() : -1;
	sqlite3 *db = open_db(g_opts->db, why, sizeof(why));

	if (g_opts->mode == MODE_PERSIST && pfd < 0) {
		snprintf(why, sizeof(why), "open %s: %s", SLSVIRT_DEV_PATH, strerror(errno));
		goto fail;
	}
	if (!db)
		goto fail;
	if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM kv", -1, &max_st, NULL) ||
	    sqlite3_prepare_v2(db, "INSERT INTO kv(id, client, val, born) VALUES(?, ?, ?, ?)", -1, &ins, NULL) ||
	    sqlite3_prepare_v2(db, "UPDATE clients SET n = n + 1 WHERE client = ?", -1, &upd, NULL)) {
		snprintf(why, sizeof(why), "prepare: %s", sqlite3_errmsg(db));
		goto fail;
	}
	while (!atomic_load(&stop_clients)) {
		uint64_t id, ticket = 0, epoch = 0, newest;
		int64_t born;

		pthread_mutex_lock(&writer_lock);
		if (exec(db, "BEGIN IMMEDIATE", why, sizeof(why)))
			goto fail_locked;
		if (sqlite3_step(max_st) != SQLITE_ROW) {
			snprintf(why, sizeof(why), "max(id): %s", sqlite3_errmsg(db));
			goto fail_locked;
		}
		id = (uint64_t)sqlite3_column_int64(max_st, 0) + 1;
		sqlite3_reset(max_st);
		value_of(id, val);
		sqlite3_bind_int64(ins, 1, (sqlite3_int64)id);
		sqlite3_bind_int(ins, 2, (int)ca->id);
		sqlite3_bind_text(ins, 3, val, VAL_LEN, SQLITE_STATIC);
		born = rtc_fd >= 0 ? rtc_seconds(rtc_fd) : 0;
		sqlite3_bind_int64(ins, 4, born == INT64_MIN ? 0 : born);
		sqlite3_bind_int(upd, 1, (int)ca->id);
		if (sqlite3_step(ins) != SQLITE_DONE || sqlite3_step(upd) != SQLITE_DONE) {
			snprintf(why, sizeof(why), "write txn %" PRIu64 ": %s", id, sqlite3_errmsg(db));
			goto fail_locked;
		}
		sqlite3_reset(ins);
		sqlite3_reset(upd);
		if (exec(db, "COMMIT", why, sizeof(why)))
			goto fail_locked;
		pthread_mutex_unlock(&writer_lock);
		/*
		 * Committed in memory; other clients may already read it. The ack
		 * waits for a PERSIST issued now, after COMMIT returned, outside
		 * every lock: concurrent clients' PERSISTs share an epoch.
		 */
		if (g_opts->mode == MODE_PERSIST) {
			if (persist_barrier(pfd, &ticket, &epoch)) {
				snprintf(why, sizeof(why), "PERSIST after txn %" PRIu64 " (ticket %" PRIu64
					 ", epoch %" PRIu64 "): %s", id, ticket, epoch, strerror(errno));
				goto fail;
			}
			newest = atomic_load(&newest_ticket);
			while (ticket > newest && !atomic_compare_exchange_weak(&newest_ticket, &newest, ticket))
				;
			if (ticket > newest)
				atomic_fetch_add(&ticket_epochs, 1);
		}
		if (!g_opts->quiet)
			printf("SLS: sqlite ack=%" PRIu64 " epoch=%" PRIu64 " ticket=%" PRIu64 "\n",
			       id, epoch, ticket);
		if (g_opts->txns && atomic_fetch_add(&committed, 1) + 1 >= g_opts->txns)
			atomic_store(&stop_clients, true);
		else if (!g_opts->txns)
			atomic_fetch_add(&committed, 1);
	}
	sqlite3_finalize(max_st);
	sqlite3_finalize(ins);
	sqlite3_finalize(upd);
	sqlite3_close(db);
	if (rtc_fd >= 0)
		close(rtc_fd);
	if (pfd >= 0)
		close(pfd);
	return NULL;
fail_locked:
	pthread_mutex_unlock(&writer_lock);
fail:
	printf("SLS: sqlite client %u FAILED: %s\n", ca->id, why);
	atomic_store(&run_failed, true);
	atomic_store(&stop_clients, true);
	sqlite3_finalize(max_st);
	sqlite3_finalize(ins);
	sqlite3_finalize(upd);
	sqlite3_close(db);
	if (rtc_fd >= 0)
		close(rtc_fd);
	if (pfd >= 0)
		close(pfd);
	return NULL;
}

/*
 * One verification in its own connection and read transaction. Returns 0
 * if the database is intact; *max_out = the highest id (all of 1..max are
 * present).
 */
static int verify_db(uint64_t n, uint64_t upto, uint64_t *max_out)
{
	static uint64_t per_client[MAX_CLIENTS + 1];
	char why[256] = "", val[VAL_LEN + 1], restarts[RESTARTS_KEPT * 32 + 2] = "";
	uint64_t restart_id[RESTARTS_KEPT], nr_restarts = 0;
	int64_t restart_born[RESTARTS_KEPT], prev_born = 0;
	sqlite3_stmt *st = NULL;
	uint64_t t0 = mono_ns(), rows = 0, next = 1, nclients = 0;
	sqlite3 *db;
	int rc;

	printf("SLS: sqlite verify begin n=%" PRIu64 "\n", n);
	memset(per_client, 0, sizeof(per_client));
	db = open_db(g_opts->db, why, sizeof(why));
	if (!db)
		goto out;
	if (exec(db, "BEGIN", why, sizeof(why)))
		goto out;
	/* integrity_check, then the scan, in the same snapshot. */
	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL)) {
		snprintf(why, sizeof(why), "integrity_check: %s", sqlite3_errmsg(db));
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *r = (const char *)sqlite3_column_text(st, 0);

		if (!r || strcmp(r, "ok")) {
			snprintf(why, sizeof(why), "integrity_check: %s", r ? r : "(null)");
			goto out;
		}
	}
	if (rc != SQLITE_DONE) {
		snprintf(why, sizeof(why), "integrity_check: %s", sqlite3_errmsg(db));
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(db, "SELECT id, client, val, born FROM kv ORDER BY id", -1, &st, NULL)) {
		snprintf(why, sizeof(why), "scan: %s", sqlite3_errmsg(db));
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
		int64_t client = sqlite3_column_int64(st, 1);
		const char *v = (const char *)sqlite3_column_text(st, 2);
		int64_t born = sqlite3_column_int64(st, 3);

		if (id != next) {
			snprintf(why, sizeof(why), "txn %" PRIu64 " missing (next present: %" PRIu64 ")", next, id);
			goto out;
		}
		value_of(id, val);
		if (!v || strcmp(v, val)) {
			snprintf(why, sizeof(why), "txn %" PRIu64 " has a wrong value", id);
			goto out;
		}
		if (client < 0 || client >= MAX_CLIENTS) {
			snprintf(why, sizeof(why), "txn %" PRIu64 " names client %" PRId64, id, client);
			goto out;
		}
		if (born && prev_born && born - prev_born >= 2) {
			restart_id[nr_restarts % RESTARTS_KEPT] = id;
			restart_born[nr_restarts % RESTARTS_KEPT] = born;
			nr_restarts++;
		}
		if (born)
			prev_born = born;
		per_client[client]++;
		rows++;
		next++;
	}
	if (rc != SQLITE_DONE) {
		snprintf(why, sizeof(why), "scan: %s", sqlite3_errmsg(db));
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(db, "SELECT client, n FROM clients", -1, &st, NULL)) {
		snprintf(why, sizeof(why), "clients: %s", sqlite3_errmsg(db));
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t c = sqlite3_column_int64(st, 0);
		uint64_t cn = (uint64_t)sqlite3_column_int64(st, 1);

		if (c < 0 || c >= MAX_CLIENTS || per_client[c] != cn) {
			snprintf(why, sizeof(why), "client %" PRId64 " counts %" PRIu64 " txns, kv holds %" PRIu64,
				 c, cn, c >= 0 && c < MAX_CLIENTS ? per_client[c] : 0);
			goto out;
		}
		per_client[c] = 0;
		nclients++;
	}
	if (rc != SQLITE_DONE) {
		snprintf(why, sizeof(why), "clients: %s", sqlite3_errmsg(db));
		goto out;
	}
	for (unsigned c = 0; c < MAX_CLIENTS; c++) {
		if (per_client[c]) {
			snprintf(why, sizeof(why), "kv rows of client %u without a counter", c);
			goto out;
		}
	}
	if (upto && rows < upto)
		snprintf(why, sizeof(why), "txns %" PRIu64 "..%" PRIu64 " missing", rows + 1, upto);
out:
	sqlite3_finalize(st);
	if (db) {
		sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		sqlite3_close(db);
	}
	if (why[0]) {
		printf("SLS: sqlite verify FAILED n=%" PRIu64 ": %s\n", n, why);
		return -1;
	}
	*max_out = rows;
	for (uint64_t i = nr_restarts > RESTARTS_KEPT ? nr_restarts - RESTARTS_KEPT : 0; i < nr_restarts; i++)
		snprintf(restarts + strlen(restarts), sizeof(restarts) - strlen(restarts), "%s%" PRIu64 "@%" PRId64,
			 *restarts ? "," : "", restart_id[i % RESTARTS_KEPT], restart_born[i % RESTARTS_KEPT]);
	printf("SLS: sqlite verify ok n=%" PRIu64 " max=%" PRIu64 " rows=%" PRIu64 " clients=%" PRIu64
	       " integrity=ok restarts=%s took=%" PRIu64 "ms\n", n, rows, rows, nclients,
	       *restarts ? restarts : "-", (mono_ns() - t0) / 1000000);
	return 0;
}

static void *verifier_main(void *p)
{
	int rtc_fd = open("/dev/rtc0", O_RDONLY | O_CLOEXEC);
	int64_t offset = rtc_offset(rtc_fd);
	uint64_t next = mono_ns() + g_opts->verify_ms * 1000000ull, n = 0, max;

	(void)p;
	while (!atomic_load(&stop_clients)) {
		struct timespec ts = {0, 200000000};
		int64_t now;
		bool due = g_opts->verify_ms && mono_ns() >= next;

		nanosleep(&ts, NULL);
		now = rtc_offset(rtc_fd);
		if (offset != INT64_MIN && now != INT64_MIN && (now - offset >= 2 || offset - now >= 2)) {
			printf("SLS: sqlite restored? host clock jumped %+" PRId64 " s against guest time\n",
			       now - offset);
			due = true;
		}
		offset = now;
		if (due) {
			verify_db(++n, 0, &max);
			offset = rtc_offset(rtc_fd);
			next = mono_ns() + g_opts->verify_ms * 1000000ull;
		}
	}
	return NULL;
}

static void remove_db(const char *path)
{
	char p[512];

	for (const char *suffix = ""; suffix; suffix = !*suffix ? "-wal" : !strcmp(suffix, "-wal") ? "-shm" : NULL) {
		snprintf(p, sizeof(p), "%s%s", path, suffix);
		unlink(p);
	}
}

/* A run of the workload; returns 0 if every client ended without an error. */
static int run_workload(const struct opts *o, bool with_verifier)
{
	static struct client_args ca[MAX_CLIENTS];
	char why[256] = "";
	pthread_t verifier;
	uint64_t t0, t1, limit;
	sqlite3 *db;

	g_opts = o;
	atomic_store(&committed, 0);
	atomic_store(&ticket_epochs, 0);
	atomic_store(&newest_ticket, 0);
	atomic_store(&stop_clients, false);
	atomic_store(&run_failed, false);
	db = open_db(o->db, why, sizeof(why));
	if (!db || create_schema(db, o->clients, why, sizeof(why))) {
		printf("SLS: sqlite setup FAILED: %s\n", why);
		sqlite3_close(db);
		return -1;
	}
	sqlite3_close(db);
	printf("SLS: sqlite start mode=%s clients=%u db=%s journal=wal synchronous=%s ack=%s\n",
	       mode_name(), o->clients, o->db, synchronous_of_mode(),
	       o->mode == MODE_PERSIST ? "persist-after-commit" : "after-commit");
	t0 = mono_ns();
	for (unsigned c = 0; c < o->clients; c++) {
		ca[c].id = c;
		if (pthread_create(&ca[c].thr, NULL, client_main, &ca[c])) {
			printf("SLS: sqlite cannot start client %u\n", c);
			return -1;
		}
	}
	if (with_verifier && pthread_create(&verifier, NULL, verifier_main, NULL)) {
		printf("SLS: sqlite cannot start the verifier\n");
		return -1;
	}
	limit = o->seconds ? t0 + o->seconds * 1000000000ull : 0;
	while (!atomic_load(&stop_clients)) {
		struct timespec ts = {0, 10000000};

		nanosleep(&ts, NULL);
		if (limit && mono_ns() >= limit)
			atomic_store(&stop_clients, true);
	}
	for (unsigned c = 0; c < o->clients; c++)
		pthread_join(ca[c].thr, NULL);
	t1 = mono_ns();
	if (with_verifier)
		pthread_join(verifier, NULL);
	printf("SLS: sqlite done txns=%" PRIu64 " clients=%u mode=%s guest_ms=%" PRIu64 " %s epochs=%" PRIu64 "\n",
	       atomic_load(&committed), o->clients, mode_name(), (t1 - t0) / 1000000,
	       atomic_load(&run_failed) ? "FAILED" : "ok", atomic_load(&ticket_epochs));
	return atomic_load(&run_failed) ? -1 : 0;
}

/* ------------------------------------------------------------------ latency */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void print_lat(const char *kind, uint64_t *ns, unsigned n, uint64_t total_ns)
{
	qsort(ns, n, sizeof(*ns), cmp_u64);
	printf("SLS: sqlite lat kind=%s n=%u p50_us=%" PRIu64 " p99_us=%" PRIu64 " min_us=%" PRIu64
	       " max_us=%" PRIu64 " mean_us=%" PRIu64 "\n", kind, n, ns[n / 2] / 1000,
	       ns[(uint64_t)n * 99 / 100] / 1000, ns[0] / 1000, ns[n - 1] / 1000, total_ns / n / 1000);
}

/* PERSIST after a one-word write, n times. The guest clock stops during a
 * capture's pause: the host measures the wall time of the whole loop
 * between the "lat begin" and "lat kind=" lines. */
volatile uint64_t lat_word;	/* what each sample writes before its PERSIST */

static int lat_persist(unsigned n)
{
	uint64_t *ns = calloc(n, sizeof(*ns)), total = 0;

	if (!ns)
		return -1;
	printf("SLS: sqlite lat begin kind=persist n=%u\n", n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t t0 = mono_ns();

		lat_word = i;
		if (persist_now()) {
			printf("SLS: sqlite lat FAILED kind=persist: %s\n", strerror(errno));
			free(ns);
			return -1;
		}
		ns[i] = mono_ns() - t0;
		total += ns[i];
	}
	print_lat("persist", ns, n, total);
	free(ns);
	return 0;
}

/* 4 KiB pwrite at offset 0 of FILE + fsync (or fdatasync), n times. */
static int lat_fsync(const char *file, unsigned n, bool data_only)
{
	static char buf[4096];
	uint64_t *ns = calloc(n, sizeof(*ns)), total = 0;
	const char *kind = data_only ? "fdatasync" : "fsync";
	int fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	if (!ns || fd < 0) {
		printf("SLS: sqlite lat FAILED kind=%s: %s: %s\n", kind, file, strerror(errno));
		free(ns);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	printf("SLS: sqlite lat begin kind=%s n=%u\n", kind, n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t t0 = mono_ns();

		memset(buf, (int)i, sizeof(buf));
		if (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf) ||
		    (data_only ? fdatasync(fd) : fsync(fd))) {
			printf("SLS: sqlite lat FAILED kind=%s: %s\n", kind, strerror(errno));
			free(ns);
			close(fd);
			return -1;
		}
		ns[i] = mono_ns() - t0;
		total += ns[i];
	}
	print_lat(kind, ns, n, total);
	free(ns);
	close(fd);
	unlink(file);
	return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
	fprintf(stderr,
		"usage: sls-sqlite run    [-m persist|fsync|none] [-d DB] [-c CLIENTS] [-n TXNS] [-t S] [-v MS] [-q]\n"
		"       sls-sqlite verify [-m persist|fsync|none] [-d DB] [-u UPTO]\n"
		"       sls-sqlite bench  [-m persist|fsync|none] [-d DB] [-c N:N..] [-t S] [-l SAMPLES] [-f LATFILE]\n");
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
	struct opts o = {.mode = MODE_PERSIST, .db = "/tmp/sls.db", .clients = 1};
	const char *cmd, *client_list = "1,4", *latfile = "/mnt/disk/lat";
	uint64_t upto = 0, lat_n = 300, max;
	int opt, rc = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		usage();
	cmd = argv[1];
	optind = 2;
	while ((opt = getopt(argc, argv, "m:d:c:n:t:v:u:l:f:q")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "persist"))
				o.mode = MODE_PERSIST;
			else if (!strcmp(optarg, "fsync"))
				o.mode = MODE_FSYNC;
			else if (!strcmp(optarg, "none"))
				o.mode = MODE_NONE;
			else
				usage();
			break;
		case 'd': o.db = optarg; break;
		case 'c': client_list = optarg; o.clients = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'n': o.txns = number(optarg); break;
		case 't': o.seconds = number(optarg); break;
		case 'v': o.verify_ms = number(optarg); break;
		case 'u': upto = number(optarg); break;
		case 'l': lat_n = number(optarg); break;
		case 'f': latfile = optarg; break;
		case 'q': o.quiet = true; break;
		default: usage();
		}
	}
	if (optind != argc || !o.clients || o.clients > MAX_CLIENTS || !lat_n || lat_n > 1000000)
		usage();
	g_opts = &o;
	if (sqlite3_initialize() != SQLITE_OK) {
		printf("SLS: sqlite cannot initialize SQLite\n");
		return 1;
	}
	if (o.mode == MODE_PERSIST) {
		persist_fd = slsvirt_open();
		if (persist_fd < 0) {
			printf("SLS: sqlite cannot open %s: %s\n", SLSVIRT_DEV_PATH, strerror(errno));
			return 1;
		}
	}

	if (!strcmp(cmd, "run")) {
		rc = run_workload(&o, true);
	} else if (!strcmp(cmd, "verify")) {
		rc = verify_db(1, upto, &max);
	} else if (!strcmp(cmd, "bench")) {
		char *list = strdup(client_list), *save = NULL;

		rc = o.mode == MODE_PERSIST ? lat_persist((unsigned)lat_n)
					    : lat_fsync(latfile, (unsigned)lat_n, false) ||
					      lat_fsync(latfile, (unsigned)lat_n, true);
		o.quiet = true;
		if (!o.seconds)
			o.seconds = 10;
		for (char *c = strtok_r(list, ",:", &save); c && !rc; c = strtok_r(NULL, ",:", &save)) {
			o.clients = (unsigned)number(c);
			if (!o.clients || o.clients > MAX_CLIENTS)
				usage();
			remove_db(o.db);
			rc = run_workload(&o, false);
			if (!rc && o.mode == MODE_PERSIST) {
				/* The same run with no durability at all: what the
				 * guest's CPU allows, the bound of any speedup. */
				o.mode = MODE_NONE;
				remove_db(o.db);
				rc = run_workload(&o, false);
				o.mode = MODE_PERSIST;
			}
		}
		remove_db(o.db);
		free(list);
		printf("SLS: sqlite bench done %s\n", rc ? "FAILED" : "ok");
	} else {
		usage();
	}
	return rc ? 1 : 0;
}
