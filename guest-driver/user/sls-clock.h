/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Clocks the guest test programs share. A restored guest's CLOCK_MONOTONIC
 * resumes from its epoch (the virtual clock stops while the VM is dead), but
 * the RTC follows the host's wall clock: their difference jumping tells a
 * program it was restored, and RTC seconds date rows across a restore.
 */
#ifndef SLS_CLOCK_H
#define SLS_CLOCK_H

#include <linux/rtc.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

static inline uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* RTC time (host UTC under QEMU's default -rtc) in seconds; INT64_MIN if none. */
static inline int64_t rtc_seconds(int rtc_fd)
{
	struct rtc_time rt;
	struct tm tm;

	if (rtc_fd < 0 || ioctl(rtc_fd, RTC_RD_TIME, &rt) < 0)
		return INT64_MIN;
	memset(&tm, 0, sizeof(tm));
	tm.tm_sec = rt.tm_sec;
	tm.tm_min = rt.tm_min;
	tm.tm_hour = rt.tm_hour;
	tm.tm_mday = rt.tm_mday;
	tm.tm_mon = rt.tm_mon;
	tm.tm_year = rt.tm_year;
	return (int64_t)timegm(&tm);
}

/* RTC seconds minus CLOCK_MONOTONIC seconds; INT64_MIN if no RTC. */
static inline int64_t rtc_offset(int rtc_fd)
{
	int64_t rtc = rtc_seconds(rtc_fd);

	return rtc == INT64_MIN ? INT64_MIN : rtc - (int64_t)(mono_ns() / 1000000000ull);
}

#endif /* SLS_CLOCK_H */
