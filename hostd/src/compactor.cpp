#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "slsvirt/compactor.hpp"
#include "slsvirt/branch.hpp"
#include "slsvirt/log.hpp"

namespace slsvirt {

namespace {

// Background work yields to the epoch path: a compaction or spare thread
// runs at nice 10 and the lowest best-effort I/O priority (mq-deadline and
// bfq serve an epoch's writes first; the CPU goes to the thread that acks
// epochs and to the guest's vCPUs). Not idle class: under a steady stream
// of epochs that would starve retention. Best effort: failures are logged.
void run_in_background(const char *name, const std::string &who)
{
	pthread_setname_np(pthread_self(), name);
	const auto tid = static_cast<id_t>(syscall(SYS_gettid));
	if (setpriority(PRIO_PROCESS, tid, 10) < 0)
		SLS_LOG_DEBUG("%s: %s: nice 10: %s", who.c_str(), name, strerror(errno));
	constexpr int kIoprioWhoProcess = 1, kIoprioClassBe = 2, kIoprioClassShift = 13;
	if (syscall(SYS_ioprio_set, kIoprioWhoProcess, static_cast<int>(tid), (kIoprioClassBe << kIoprioClassShift) | 7) < 0)
		SLS_LOG_DEBUG("%s: %s: I/O priority best-effort 7: %s", who.c_str(), name, strerror(errno));
}

} // namespace

Compactor::Compactor(const Store &store, RetentionPolicy policy, FaultPlan faults, unsigned interval_ms,
		     std::string who)
    : store_(store), policy_(policy), faults_(std::move(faults)), interval_ms_(interval_ms), who_(std::move(who))
{
}

Compactor::~Compactor()
{
	{
		std::lock_guard lk(mu_);
		stop_ = true;
	}
	cv_.notify_all();
	spare_cv_.notify_all();
	if (thread_.joinable())
		thread_.join();
	if (spare_thread_.joinable())
		spare_thread_.join();
}

void Compactor::kick()
{
	{
		std::lock_guard lk(mu_);
		pending_ = true;
		spare_pending_ = true;
		if (!thread_.joinable())
			thread_ = std::thread([this] { loop(); });
		if (!spare_thread_.joinable())
			spare_thread_ = std::thread([this] { spare_loop(); });
	}
	cv_.notify_all();
	spare_cv_.notify_all();
}

void Compactor::spare_loop()
{
	run_in_background("sls-spares", who_);
	std::unique_lock lk(mu_);
	for (;;) {
		spare_cv_.wait(lk, [&] { return stop_ || spare_pending_; });
		if (stop_)
			return;
		spare_pending_ = false;
		lk.unlock();
		auto r = store_.make_spares();
		lk.lock();
		if (r.ok()) {
			spares_made_ += *r;
			last_spare_error_.clear();
		} else if (r.message() != last_spare_error_) {
			// Not fatal: an epoch with no spare that fits writes a new file.
			SLS_LOG_WARN("%s: making spare segment files: %s", who_.c_str(), r.message().c_str());
			last_spare_error_ = r.message();
		}
	}
}

void Compactor::wait_idle()
{
	std::unique_lock lk(mu_);
	cv_.wait(lk, [&] { return stop_ || (!pending_ && !running_); });
}

void Compactor::loop()
{
	run_in_background("sls-compact", who_);
	std::unique_lock lk(mu_);
	for (;;) {
		cv_.wait(lk, [&] { return stop_ || pending_; });
		// On stop, a pass that was asked for still runs (its VM just
		// disconnected; retention should not wait for the next connection).
		if (!pending_)
			return;
		pending_ = false;
		running_ = true;
		lk.unlock();
		run_once();
		lk.lock();
		running_ = false;
		cv_.notify_all();
		// Rate limit: a flood of epochs does not turn into a flood of passes.
		if (!stop_)
			cv_.wait_for(lk, std::chrono::milliseconds(interval_ms_), [&] { return stop_; });
	}
}

void Compactor::run_once()
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	auto views = store_.catalog(ScanDepth::structure);
	if (!views) {
		SLS_LOG_WARN("%s: retention: %s", who_.c_str(), views.message().c_str());
		return;
	}
	RetentionPlan plan = plan_retention(*views, policy_, timeline_pins(store_.vm_dir(), *views));
	if (!plan.oldest_retained)
		return;
	auto cs = store_.compact(plan, faults_, &store_lock_);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	const uint64_t ns = static_cast<uint64_t>((t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
	passes_++;
	last_pass_ns_ = ns;
	if (ns > max_pass_ns_)
		max_pass_ns_ = ns;
	if (!cs) {
		SLS_LOG_ERROR("%s: compaction: %s", who_.c_str(), cs.message().c_str());
		return;
	}
	removed_ += cs->removed;
	if (cs->epoch && cs->merged) {
		merges_++;
		SLS_LOG_INFO("%s: merged %llu deltas into epoch %llu (%llu pages, %llu bytes, load_ms=%.1f "
			     "write_ms=%.1f total_ms=%.1f), removed %llu segments",
			     who_.c_str(), static_cast<unsigned long long>(cs->chain_len),
			     static_cast<unsigned long long>(cs->epoch), static_cast<unsigned long long>(cs->pages),
			     static_cast<unsigned long long>(cs->base_bytes), cs->load_ns / 1e6, cs->write_ns / 1e6,
			     cs->total_ns / 1e6, static_cast<unsigned long long>(cs->removed));
	} else if (cs->epoch) {
		bases_++;
		SLS_LOG_INFO("%s: compacted epoch %llu into a base (%llu segments folded, %llu bytes, load_ms=%.1f "
			     "write_ms=%.1f total_ms=%.1f), removed %llu segments",
			     who_.c_str(), static_cast<unsigned long long>(cs->epoch),
			     static_cast<unsigned long long>(cs->chain_len), static_cast<unsigned long long>(cs->base_bytes),
			     cs->load_ns / 1e6, cs->write_ns / 1e6, cs->total_ns / 1e6,
			     static_cast<unsigned long long>(cs->removed));
	} else {
		SLS_LOG_DEBUG("%s: retention removed %llu segments", who_.c_str(),
			      static_cast<unsigned long long>(cs->removed));
	}
}

} // namespace slsvirt
