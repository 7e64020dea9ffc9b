// SPDX-License-Identifier: GPL-2.0-or-later
// sls-persist-cxx [--seconds S] [--interval-ms M] [--fds K]: a well-behaved
// C++ guest program on the slsvirt.hpp wrapper. Every M ms (default 20) it
// dirties memory, makes one synchronous PERSIST and one asynchronous PERSIST
// on each of K extra fds (default 4) that it waits for with one poll() over
// all of them. Once a second: "SLS: cxx-persist t=... " with counts and
// sync latency percentiles; at the end (S > 0; 0 = run until killed)
// "SLS: cxx-persist done ..." and exit 0 if no call failed.
// Used by tests/guest (sls-ioctl-test runs it) and as the well-behaved VM of
// tests/integration/hostile-guest-isolation.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>

#include "slsvirt.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

struct options {
	unsigned seconds = 0;
	unsigned interval_ms = 20;
	unsigned fds = 4;
};

struct counters {
	std::uint64_t sync_ok = 0, async_ok = 0, failed = 0, last_epoch = 0;
	std::vector<double> sync_us;	// since the last report
};

bool parse(int argc, char **argv, options &opt)
{
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		unsigned *dst = a == "--seconds" ? &opt.seconds :
				a == "--interval-ms" ? &opt.interval_ms :
				a == "--fds" ? &opt.fds : nullptr;
		char *end;

		if (!dst || i + 1 == argc)
			return false;
		*dst = std::strtoul(argv[++i], &end, 10);
		if (*end)
			return false;
	}
	return opt.fds <= 64;
}

double percentile(std::vector<double> v, double p)
{
	if (v.empty())
		return 0;
	auto k = static_cast<std::size_t>(p * (v.size() - 1));
	std::nth_element(v.begin(), v.begin() + k, v.end());
	return v[k];
}

void fail(counters &c, const char *what, std::error_code ec)
{
	c.failed++;
	std::printf("SLS: cxx-persist error %s: %s\n", what, ec.message().c_str());
}

// One asynchronous PERSIST per fd, then one poll() over all of them until
// every ticket has its completion.
void async_round(std::vector<slsvirt::device> &devs, counters &c)
{
	std::vector<std::uint64_t> tickets(devs.size());
	std::vector<bool> done(devs.size(), false);
	std::size_t left = devs.size();

	for (std::size_t i = 0; i < devs.size(); i++) {
		auto t = devs[i].persist_async();
		if (!t) {
			fail(c, "persist_async", t.error());
			done[i] = true;
			left--;
			continue;
		}
		tickets[i] = t.value();
	}
	while (left) {
		std::vector<pollfd> pfds;
		std::vector<std::size_t> idx;

		for (std::size_t i = 0; i < devs.size(); i++) {
			if (!done[i]) {
				pfds.push_back({devs[i].fd(), POLLIN, 0});
				idx.push_back(i);
			}
		}
		int n = poll(pfds.data(), pfds.size(), 10000);
		if (n <= 0) {
			fail(c, "poll", n ? slsvirt::last_error() :
			     std::make_error_code(std::errc::timed_out));
			return;
		}
		for (std::size_t j = 0; j < pfds.size(); j++) {
			std::size_t i = idx[j];

			if (!(pfds[j].revents & (POLLIN | POLLERR)))
				continue;
			auto rec = devs[i].next_completion();
			done[i] = true;
			left--;
			if (!rec)
				fail(c, "read completion", rec.error());
			else if (rec.value().ticket != tickets[i] || slsvirt::completion_error(rec.value()))
				fail(c, "completion", slsvirt::completion_error(rec.value()));
			else if (rec.value().epoch < tickets[i])
				fail(c, "completion epoch below ticket",
				     std::make_error_code(std::errc::protocol_error));
			else
				c.async_ok++;
		}
	}
}

} // namespace

int main(int argc, char **argv)
{
	options opt;
	counters c;

	std::setvbuf(stdout, nullptr, _IOLBF, 0);
	if (!parse(argc, argv, opt)) {
		std::fprintf(stderr, "usage: sls-persist-cxx [--seconds S] [--interval-ms M] [--fds K<=64]\n");
		return 2;
	}

	auto dev = slsvirt::device::open();
	if (!dev) {
		std::printf("SLS: cxx-persist open: %s\n", dev.error().message().c_str());
		return 1;
	}
	std::vector<slsvirt::device> async_devs;
	for (unsigned i = 0; i < opt.fds; i++) {
		auto d = slsvirt::device::open();
		if (!d) {
			std::printf("SLS: cxx-persist open: %s\n", d.error().message().c_str());
			return 1;
		}
		async_devs.push_back(std::move(d).value());
	}
	if (auto ei = dev.value().epoch(); ei)
		std::printf("SLS: cxx-persist start current_epoch=%" PRIu64 " durable_epoch=%" PRIu64 "\n",
			    static_cast<std::uint64_t>(ei.value().current_epoch),
			    static_cast<std::uint64_t>(ei.value().durable_epoch));

	std::vector<std::uint64_t> scratch(1 << 16);
	const auto start = clock_type::now();
	auto next_report = start + std::chrono::seconds(1);
	std::uint64_t round = 0;

	for (;;) {
		auto now = clock_type::now();
		if (opt.seconds && now - start >= std::chrono::seconds(opt.seconds))
			break;

		// Something for the barrier to cover.
		for (std::size_t i = round % 64; i < scratch.size(); i += 64)
			scratch[i] = round;
		round++;

		auto t0 = clock_type::now();
		auto e = dev.value().persist();
		auto us = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
		if (!e) {
			fail(c, "persist", e.error());
		} else if (e.value() < c.last_epoch) {
			fail(c, "persist epoch went backwards", std::make_error_code(std::errc::protocol_error));
		} else {
			c.sync_ok++;
			c.last_epoch = e.value();
			c.sync_us.push_back(us);
		}
		async_round(async_devs, c);

		if (clock_type::now() >= next_report) {
			auto t = std::chrono::duration_cast<std::chrono::seconds>(clock_type::now() - start);
			std::printf("SLS: cxx-persist t=%lld sync_ok=%" PRIu64 " async_ok=%" PRIu64
				    " failed=%" PRIu64 " epoch=%" PRIu64 " p50_us=%.0f p99_us=%.0f\n",
				    static_cast<long long>(t.count()), c.sync_ok, c.async_ok, c.failed,
				    c.last_epoch, percentile(c.sync_us, 0.5), percentile(c.sync_us, 0.99));
			c.sync_us.clear();
			next_report += std::chrono::seconds(1);
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(opt.interval_ms));
	}
	std::printf("SLS: cxx-persist done sync_ok=%" PRIu64 " async_ok=%" PRIu64 " failed=%" PRIu64
		    " epoch=%" PRIu64 "\n", c.sync_ok, c.async_ok, c.failed, c.last_epoch);
	return c.failed || !c.sync_ok ? 1 : 0;
}
