#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "slsvirt/fault.hpp"
#include "slsvirt/log.hpp"

namespace slsvirt {
namespace {
struct Name {
	const char *name;
	FaultKind kind;
};
constexpr Name kNames[] = {
	{"crash-mid-data", FaultKind::crash_mid_data},
	{"crash-before-commit", FaultKind::crash_before_commit},
	{"fail-write", FaultKind::fail_write},
	{"short-write", FaultKind::short_write},
	{"enospc", FaultKind::enospc},
	{"fail-fdatasync", FaultKind::fail_fdatasync},
	{"delay-ack-ms", FaultKind::delay_ack_ms},
	{"crash-compaction-writing", FaultKind::crash_compaction_writing},
	{"crash-compaction-tmp", FaultKind::crash_compaction_tmp},
	{"crash-compaction-renamed", FaultKind::crash_compaction_renamed},
	{"crash-mid-compaction", FaultKind::crash_mid_compaction},
};
} // namespace

Result<FaultPlan> FaultPlan::parse(const std::string &spec)
{
	FaultPlan plan;
	size_t pos = 0;
	while (pos < spec.size()) {
		size_t end = spec.find(',', pos);
		if (end == std::string::npos)
			end = spec.size();
		std::string item = spec.substr(pos, end - pos);
		pos = end + 1;
		if (item.empty())
			continue;
		size_t colon = item.find(':');
		if (colon == std::string::npos)
			return make_error(-EINVAL, "fault '%s': expected NAME:NUMBER", item.c_str());
		std::string name = item.substr(0, colon), num = item.substr(colon + 1);
		char *endp = nullptr;
		errno = 0;
		unsigned long long v = strtoull(num.c_str(), &endp, 10);
		if (num.empty() || *endp || errno || num[0] == '-')
			return make_error(-EINVAL, "fault '%s': '%s' is not a number", item.c_str(), num.c_str());
		bool found = false;
		for (const auto &n : kNames) {
			if (name == n.name) {
				plan.faults_.push_back({n.kind, v});
				found = true;
			}
		}
		if (!found)
			return make_error(-EINVAL, "unknown fault '%s' (known: %s)", name.c_str(),
					  known_names().c_str());
	}
	return plan;
}

bool FaultPlan::hits(FaultKind kind, uint64_t epoch) const
{
	for (const auto &f : faults_)
		if (f.kind == kind && f.arg == epoch)
			return true;
	return false;
}

uint64_t FaultPlan::delay_ack_ms() const
{
	for (const auto &f : faults_)
		if (f.kind == FaultKind::delay_ack_ms)
			return f.arg;
	return 0;
}

std::string FaultPlan::describe() const
{
	std::string s;
	for (const auto &f : faults_) {
		for (const auto &n : kNames)
			if (n.kind == f.kind)
				s += strf("%s%s:%llu", s.empty() ? "" : ",", n.name,
					  static_cast<unsigned long long>(f.arg));
	}
	return s.empty() ? "none" : s;
}

std::string FaultPlan::known_names()
{
	std::string s;
	for (const auto &n : kNames)
		s += strf("%s%s", s.empty() ? "" : ", ", n.name);
	return s;
}

void FaultPlan::crash(const char *where, uint64_t epoch)
{
	SLS_LOG_WARN("fault injection: %s for epoch %llu: raising SIGKILL", where,
		     static_cast<unsigned long long>(epoch));
	raise(SIGKILL);
	_exit(137);
}

} // namespace slsvirt
