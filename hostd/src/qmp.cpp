// QMP client: newline-delimited JSON over a unix socket.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "slsvirt/qmp.hpp"

namespace slsvirt {
namespace {
uint64_t mono_ms()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}
constexpr size_t kMaxLine = 16u << 20;	// a QMP reply larger than this is refused
} // namespace

Result<QmpClient> QmpClient::connect(const std::string &path, int timeout_ms)
{
	QmpClient c;
	c.timeout_ms_ = timeout_ms;
	sockaddr_un addr{};
	if (path.size() >= sizeof(addr.sun_path))
		return make_error(-ENAMETOOLONG, "QMP socket path too long: %s", path.c_str());
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path.c_str(), path.size());
	c.fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!c.fd_.valid())
		return errno_error("socket");
	if (::connect(c.fd_.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) < 0)
		return errno_error("connect to QMP socket " + path);
	auto greeting = c.read_message();
	if (!greeting)
		return greeting.error();
	if (!greeting->contains("QMP"))
		return make_error(-EPROTO, "%s: not a QMP greeting: %s", path.c_str(), greeting->dump().c_str());
	auto caps = c.execute("qmp_capabilities");
	if (!caps)
		return caps.error();
	return c;
}

Result<nlohmann::json> QmpClient::read_message()
{
	const uint64_t deadline = mono_ms() + static_cast<uint64_t>(timeout_ms_);
	for (;;) {
		size_t nl = buf_.find('\n');
		if (nl != std::string::npos) {
			std::string line = buf_.substr(0, nl);
			buf_.erase(0, nl + 1);
			if (line.find_first_not_of(" \r\t") == std::string::npos)
				continue;
			auto j = nlohmann::json::parse(line, nullptr, false);
			if (j.is_discarded() || !j.is_object())
				return make_error(-EPROTO, "QMP: malformed message: %.200s", line.c_str());
			return j;
		}
		if (buf_.size() > kMaxLine)
			return make_error(-EMSGSIZE, "QMP: message longer than %zu bytes", kMaxLine);
		uint64_t now = mono_ms();
		if (now >= deadline)
			return make_error(-ETIMEDOUT, "QMP: no reply within %d ms", timeout_ms_);
		struct pollfd pfd = {fd_.get(), POLLIN, 0};
		int r = ::poll(&pfd, 1, static_cast<int>(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno_error("QMP poll");
		if (r == 0)
			continue;
		char tmp[65536];
		ssize_t n = ::read(fd_.get(), tmp, sizeof(tmp));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno_error("QMP read");
		if (n == 0)
			return make_error(-ECONNRESET, "QMP: connection closed by QEMU");
		buf_.append(tmp, static_cast<size_t>(n));
	}
}

Result<nlohmann::json> QmpClient::execute(const std::string &cmd, const nlohmann::json &args)
{
	uint64_t id = next_id_++;
	nlohmann::json req = {{"execute", cmd}, {"id", id}};
	if (!args.is_null())
		req["arguments"] = args;
	std::string line = req.dump() + "\n";
	size_t done = 0;
	while (done < line.size()) {
		ssize_t n = ::send(fd_.get(), line.data() + done, line.size() - done, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno_error("QMP send " + cmd);
		done += static_cast<size_t>(n);
	}
	for (;;) {
		auto m = read_message();
		if (!m)
			return m.error();
		if (m->contains("event"))
			continue;
		if (m->contains("id") && (*m)["id"] != id)
			continue;	// a reply to an earlier, abandoned request
		if (m->contains("return"))
			return (*m)["return"];
		if (m->contains("error")) {
			const auto &e = (*m)["error"];
			std::string cls = e.value("class", "GenericError");
			std::string desc = e.value("desc", e.dump());
			return make_error(-EIO, "%s: %s", cmd.c_str(), desc.c_str());
		}
		return make_error(-EPROTO, "QMP %s: unexpected reply %.200s", cmd.c_str(), m->dump().c_str());
	}
}

} // namespace slsvirt
