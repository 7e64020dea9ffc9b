// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * sls-ioctl-test [--expect-no-host]: guest-side test of slsvirt.ko.
 *
 * Prints "SLS: TEST <name> ok|FAIL <why>" per case, then
 * "SLS: ioctl-test PASS" (exit 0) or "SLS: ioctl-test FAIL <n>" (exit 1).
 *
 * Default mode expects a host that checkpoints (slsvirtd attached).
 * --expect-no-host expects the device's store to be missing: PERSIST fails
 * with EIO at once and GET_INFO reports no SLSVIRT_INFO_CHECKPOINTING.
 * The argument-validation cases run in both modes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <slsvirt/hw.h>

#include "slsvirt.h"

#define CONCURRENT_THREADS	4
#define CONCURRENT_ROUNDS	3
/* "Immediately" for a PERSIST that cannot succeed, with TCG's slowness in mind. */
#define NO_HOST_MAX_SECONDS	2.0

static int failures;
static int dev_fd = -1;
static void *bad_ptr;		/* a mapped PROT_NONE page */

static void vreport(const char *name, bool ok, bool detail_on_ok, const char *fmt, va_list ap)
{
	char why[256] = "";

	if (!ok || detail_on_ok)
		vsnprintf(why, sizeof(why), fmt, ap);
	if (!ok)
		failures++;
	printf("SLS: TEST %s %s%s%s\n", name, ok ? "ok" : "FAIL", *why ? " " : "", why);
}

/* One verdict line; the detail is printed only on failure. */
static void report(const char *name, bool ok, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(name, ok, false, fmt, ap);
	va_end(ap);
}

/* One verdict line with the detail in any case. */
static void report_detail(const char *name, bool ok, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(name, ok, true, fmt, ap);
	va_end(ap);
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ioctl returning 0 or -errno. */
static int xioctl(unsigned long cmd, void *arg)
{
	return ioctl(dev_fd, cmd, arg) < 0 ? -errno : 0;
}

static int persist_raw(uint64_t *epoch)
{
	struct slsvirt_persist req = { 0 };
	int ret = xioctl(SLSVIRT_IOC_PERSIST, &req);

	*epoch = req.epoch;
	return ret;
}

static void expect_errno(const char *name, unsigned long cmd, void *arg, int want)
{
	int ret = xioctl(cmd, arg);

	report(name, ret == -want, "got %s, want %s", ret ? strerror(-ret) : "success",
	       strerror(want));
}

static void test_info(bool expect_host)
{
	struct slsvirt_info info;
	bool checkpointing;

	if (slsvirt_info(dev_fd, &info) < 0) {
		report("info", false, "GET_INFO: %s", strerror(errno));
		return;
	}
	printf("SLS: info dev_version=%u proto_version=%u host_status=%#x durable_epoch=%" PRIu64
	       " current_epoch=%" PRIu64 "\n", info.dev_version, info.proto_version,
	       info.host_status, (uint64_t)info.durable_epoch, (uint64_t)info.current_epoch);
	report("info-dev-version", info.dev_version == SLSVIRT_HW_VERSION, "dev_version=%u want %u",
	       info.dev_version, SLSVIRT_HW_VERSION);
	report("info-proto-version", info.proto_version == SLSVIRT_API_VERSION,
	       "proto_version=%u want %u", info.proto_version, SLSVIRT_API_VERSION);
	report("info-epochs", info.current_epoch >= info.durable_epoch,
	       "current_epoch=%" PRIu64 " durable_epoch=%" PRIu64,
	       (uint64_t)info.current_epoch, (uint64_t)info.durable_epoch);
	report("info-flags-untouched", info.flags == 0 && !info.reserved[0] && !info.reserved[1] &&
	       !info.reserved[2] && !info.reserved[3],
	       "flags/reserved changed by the driver");
	checkpointing = info.host_status & SLSVIRT_INFO_CHECKPOINTING;
	report("info-host-status", checkpointing == expect_host, "host_status=%#x, expected %s",
	       info.host_status, expect_host ? "checkpointing" : "not checkpointing");
}

static void test_validation(void)
{
	struct slsvirt_info info;
	struct slsvirt_persist req;

	expect_errno("unknown-ioctl-nr", _IOWR(SLSVIRT_IOC_MAGIC, 0x7f, struct slsvirt_persist),
		     &(struct slsvirt_persist){ 0 }, ENOTTY);
	expect_errno("unknown-ioctl-size", _IOWR(SLSVIRT_IOC_MAGIC, 0x01, uint64_t),
		     &(uint64_t){ 0 }, ENOTTY);
	expect_errno("unknown-ioctl-type", _IO('x', 0x01), NULL, ENOTTY);

	expect_errno("efault-info", SLSVIRT_IOC_GET_INFO, bad_ptr, EFAULT);
	expect_errno("efault-info-null", SLSVIRT_IOC_GET_INFO, NULL, EFAULT);
	expect_errno("efault-persist", SLSVIRT_IOC_PERSIST, bad_ptr, EFAULT);
	expect_errno("efault-persist-null", SLSVIRT_IOC_PERSIST, NULL, EFAULT);

	memset(&info, 0, sizeof(info));
	info.flags = 1;
	expect_errno("einval-info-flags", SLSVIRT_IOC_GET_INFO, &info, EINVAL);
	memset(&info, 0, sizeof(info));
	info.flags = 0x80000000u;
	expect_errno("einval-info-flags-high", SLSVIRT_IOC_GET_INFO, &info, EINVAL);
	for (int i = 0; i < 4; i++) {
		char name[64];

		memset(&info, 0, sizeof(info));
		info.reserved[i] = 1ull << 63;
		snprintf(name, sizeof(name), "einval-info-reserved-%d", i);
		expect_errno(name, SLSVIRT_IOC_GET_INFO, &info, EINVAL);
	}

	memset(&req, 0, sizeof(req));
	req.flags = 1;
	expect_errno("einval-persist-flags", SLSVIRT_IOC_PERSIST, &req, EINVAL);
	memset(&req, 0, sizeof(req));
	req.reserved0 = 1;
	expect_errno("einval-persist-reserved0-field", SLSVIRT_IOC_PERSIST, &req, EINVAL);
	for (int i = 0; i < 4; i++) {
		char name[64];

		memset(&req, 0, sizeof(req));
		req.reserved[i] = 1;
		snprintf(name, sizeof(name), "einval-persist-reserved-%d", i);
		expect_errno(name, SLSVIRT_IOC_PERSIST, &req, EINVAL);
	}
}

static void test_persist_basic(void)
{
	struct slsvirt_info info;
	uint64_t e1, e2;
	int ret;

	ret = persist_raw(&e1);
	if (ret || e1 == 0) {
		report("persist", false, "ret=%s epoch=%" PRIu64, ret ? strerror(-ret) : "0", e1);
		return;
	}
	report_detail("persist", true, "epoch=%" PRIu64, e1);

	if (slsvirt_info(dev_fd, &info) < 0)
		report("persist-then-info", false, "GET_INFO: %s", strerror(errno));
	else
		report("persist-then-info", info.durable_epoch >= e1,
		       "durable_epoch=%" PRIu64 " persist epoch=%" PRIu64,
		       (uint64_t)info.durable_epoch, e1);

	ret = persist_raw(&e2);
	report_detail("persist-twice", !ret && e2 >= e1, "ret=%s epochs %" PRIu64 " then %" PRIu64,
	       ret ? strerror(-ret) : "0", e1, e2);
}

struct thread_result {
	int err;		/* first error, -errno */
	uint64_t first, last;
	bool decreased;
};

static void *persist_thread(void *arg)
{
	struct thread_result *res = arg;
	uint64_t prev = 0, epoch;

	for (int i = 0; i < CONCURRENT_ROUNDS; i++) {
		res->err = persist_raw(&epoch);
		if (res->err)
			return NULL;
		if (epoch == 0 || epoch < prev)
			res->decreased = true;
		if (i == 0)
			res->first = epoch;
		res->last = prev = epoch;
	}
	return NULL;
}

static void test_persist_concurrent(void)
{
	struct thread_result res[CONCURRENT_THREADS] = { 0 };
	pthread_t tid[CONCURRENT_THREADS];
	char why[256] = "";
	bool ok = true;

	for (int i = 0; i < CONCURRENT_THREADS; i++) {
		if (pthread_create(&tid[i], NULL, persist_thread, &res[i])) {
			report("persist-concurrent", false, "pthread_create failed");
			for (int j = 0; j < i; j++)
				pthread_join(tid[j], NULL);
			return;
		}
	}
	for (int i = 0; i < CONCURRENT_THREADS; i++) {
		size_t len = strlen(why);

		pthread_join(tid[i], NULL);
		if (res[i].err || res[i].decreased)
			ok = false;
		snprintf(why + len, sizeof(why) - len, "%s[%d: %s %" PRIu64 "..%" PRIu64 "]",
			 i ? " " : "", i, res[i].err ? strerror(-res[i].err) :
			 res[i].decreased ? "zero/decreasing" : "ok", res[i].first, res[i].last);
	}
	report_detail("persist-concurrent", ok, "%s", why);
}

static void on_alarm(int sig)
{
	(void)sig;
}

/*
 * A signal during the PERSIST wait: with a handler installed without
 * SA_RESTART the call must end with EINTR, or succeed if the epoch became
 * durable first; never hang, never return a wrong epoch. Which outcome
 * happens depends on the host's speed, so both pass.
 */
static void test_persist_signal(void)
{
	static const long delays_us[] = { 1000, 5000, 20000 };
	struct sigaction sa = { .sa_handler = on_alarm };	/* no SA_RESTART */
	int interrupted = 0, completed = 0;
	uint64_t epoch, after;
	bool ok = true;
	char why[160] = "";

	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	for (size_t i = 0; i < sizeof(delays_us) / sizeof(delays_us[0]); i++) {
		struct itimerval it = { .it_value = { .tv_usec = delays_us[i] } };
		struct itimerval off = { 0 };
		struct slsvirt_info info;
		int ret;

		setitimer(ITIMER_REAL, &it, NULL);
		ret = persist_raw(&epoch);
		setitimer(ITIMER_REAL, &off, NULL);
		if (ret == -EINTR) {
			interrupted++;
		} else if (ret == 0) {
			completed++;
			if (epoch == 0 || slsvirt_info(dev_fd, &info) < 0 ||
			    info.durable_epoch < epoch) {
				ok = false;
				snprintf(why, sizeof(why), "bad epoch %" PRIu64 " after completed wait",
					 epoch);
			}
		} else {
			ok = false;
			snprintf(why, sizeof(why), "PERSIST: %s", strerror(-ret));
		}
	}
	signal(SIGALRM, SIG_DFL);

	/* The driver must not be wedged by an abandoned wait. */
	if (ok && (persist_raw(&after) || after == 0)) {
		ok = false;
		snprintf(why, sizeof(why), "PERSIST after interrupted waits failed");
	}
	if (ok)
		snprintf(why, sizeof(why), "%d interrupted, %d completed before the signal",
			 interrupted, completed);
	report_detail("persist-signal", ok, "%s", why);
}

static void test_persist_no_host(void)
{
	for (int i = 0; i < 2; i++) {
		double start = now_seconds(), took;
		uint64_t epoch;
		int ret = persist_raw(&epoch);

		took = now_seconds() - start;
		report_detail(i ? "persist-no-host-again" : "persist-no-host",
		       ret == -EIO && took < NO_HOST_MAX_SECONDS, "got %s after %.3f s, want EIO at once",
		       ret ? strerror(-ret) : "success", took);
	}
}

static void test_reopen(void)
{
	int fd = slsvirt_open();
	struct slsvirt_info info;

	report("second-open", fd >= 0 && slsvirt_info(fd, &info) == 0, "%s", strerror(errno));
	if (fd >= 0)
		close(fd);
}

static int write_sysfs(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, value, strlen(value));
	n = n < 0 ? -errno : 0;
	close(fd);
	return n;
}

/*
 * Unbind the driver while files are open: the open files get ENODEV, the
 * node goes away, closing them is safe, and a rebind brings the device back.
 * Last case: it replaces dev_fd.
 */
struct waiter {
	int ret;
	uint64_t epoch;
};

static void *persist_waiter(void *arg)
{
	struct waiter *w = arg;

	w->ret = persist_raw(&w->epoch);
	return NULL;
}

static void test_remove(bool expect_host)
{
	char link[256], *bdf;
	struct slsvirt_info info;
	struct waiter w = { 0 };
	pthread_t waiter;
	bool have_waiter = false;
	uint64_t epoch;
	ssize_t n;
	int ret;

	n = readlink("/sys/class/misc/" SLSVIRT_DEV_NAME "/device", link, sizeof(link) - 1);
	if (n < 0) {
		report("remove", false, "readlink of the misc device's parent: %s", strerror(errno));
		return;
	}
	link[n] = 0;
	bdf = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;

	/* A PERSIST in flight while the device goes: ENODEV, or done before it went. */
	if (expect_host && !pthread_create(&waiter, NULL, persist_waiter, &w)) {
		have_waiter = true;
		usleep(20000);
	}
	ret = write_sysfs("/sys/bus/pci/drivers/slsvirt/unbind", bdf);
	report_detail("remove-unbind", ret == 0, "%s%s%s", bdf, ret ? ": " : "",
		      ret ? strerror(-ret) : "");
	if (have_waiter) {
		pthread_join(waiter, NULL);
		report_detail("remove-wakes-waiter", w.ret == -ENODEV || (!w.ret && w.epoch > 0),
			      "waiter got %s", w.ret ? strerror(-w.ret) : "success before removal");
	}
	if (ret)
		return;
	expect_errno("remove-info-enodev", SLSVIRT_IOC_GET_INFO, &(struct slsvirt_info){ 0 },
		     ENODEV);
	ret = persist_raw(&epoch);
	report("remove-persist-enodev", ret == -ENODEV, "got %s",
	       ret ? strerror(-ret) : "success");
	report("remove-node-gone", access(SLSVIRT_DEV_PATH, F_OK) < 0 && errno == ENOENT,
	       "%s still exists", SLSVIRT_DEV_PATH);
	close(dev_fd);
	dev_fd = -1;

	ret = write_sysfs("/sys/bus/pci/drivers/slsvirt/bind", bdf);
	dev_fd = ret ? -1 : slsvirt_open();
	report("remove-rebind", dev_fd >= 0 && slsvirt_info(dev_fd, &info) == 0,
	       "bind: %s, reopen: %s", ret ? strerror(-ret) : "ok", strerror(errno));
}

int main(int argc, char **argv)
{
	bool expect_host = true;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--expect-no-host")) {
			expect_host = false;
		} else {
			fprintf(stderr, "usage: sls-ioctl-test [--expect-no-host]\n");
			return 2;
		}
	}
	printf("SLS: ioctl-test starting (%s)\n", expect_host ? "host checkpointing" : "no host");

	dev_fd = slsvirt_open();
	report("open", dev_fd >= 0, "%s: %s", SLSVIRT_DEV_PATH, strerror(errno));
	if (dev_fd < 0)
		goto out;
	bad_ptr = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bad_ptr == MAP_FAILED) {
		report("setup", false, "mmap: %s", strerror(errno));
		goto out;
	}

	test_info(expect_host);
	test_validation();
	test_reopen();
	if (expect_host) {
		test_persist_basic();
		test_persist_concurrent();
		test_persist_signal();
	} else {
		test_persist_no_host();
	}
	test_remove(expect_host);
	if (expect_host && dev_fd >= 0) {
		uint64_t epoch;
		int ret = persist_raw(&epoch);

		report("persist-after-rebind", !ret && epoch > 0, "ret=%s epoch=%" PRIu64,
		       ret ? strerror(-ret) : "0", epoch);
	}

out:
	if (failures)
		printf("SLS: ioctl-test FAIL %d\n", failures);
	else
		printf("SLS: ioctl-test PASS\n");
	return failures ? 1 : 0;
}
