#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <mutex>

#include "slsvirt/fd.hpp"
#include "slsvirt/log.hpp"
#include "slsvirt/result.hpp"

namespace slsvirt {
namespace {
std::mutex g_mu;
int g_fd = STDERR_FILENO;
LogLevel g_min = LogLevel::info;
const char *level_name(LogLevel l)
{
	switch (l) {
	case LogLevel::debug: return "debug";
	case LogLevel::info: return "info";
	case LogLevel::warn: return "warn";
	case LogLevel::error: return "error";
	}
	return "?";
}
} // namespace

bool log_open(const std::string &path)
{
	std::lock_guard lk(g_mu);
	if (path.empty()) {
		g_fd = STDERR_FILENO;
		return true;
	}
	int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	if (g_fd != STDERR_FILENO)
		::close(g_fd);
	g_fd = fd;
	return true;
}

void log_set_level(LogLevel min) { g_min = min; }

void log_line(LogLevel lvl, const char *fmt, ...)
{
	if (lvl < g_min)
		return;
	va_list ap;
	va_start(ap, fmt);
	std::string msg = vstrf(fmt, ap);
	va_end(ap);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	localtime_r(&ts.tv_sec, &tm);
	char stamp[40];
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	std::string line = strf("%s.%03ld slsvirtd[%d] %s: %s\n", stamp, ts.tv_nsec / 1000000, getpid(),
				level_name(lvl), msg.c_str());
	std::lock_guard lk(g_mu);
	// A log line that cannot be written has nowhere else to go.
	write_full(g_fd, line.data(), line.size(), "log").ignore();
}

} // namespace slsvirt
