// A VM's background retention + compaction (docs/store-format.md
// "Retention and compaction"): kicked after each EPOCH_ACK, never on the
// epoch path, runs at most once per interval on its own thread and io_uring.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "slsvirt/fault.hpp"
#include "slsvirt/store.hpp"

namespace slsvirt {

class Compactor {
public:
	Compactor(const Store &store, RetentionPolicy policy, FaultPlan faults, unsigned interval_ms, std::string who);
	~Compactor();	// runs a pending pass, waits for a running one
	Compactor(const Compactor &) = delete;
	Compactor &operator=(const Compactor &) = delete;

	// Asks for a pass (starts the thread on first use), and for spares to be
	// made ahead on a second thread (Store::make_spares), which a long pass
	// does not hold up.
	void kick();
	// Blocks until no pass is pending or running (tests, benchmarks).
	void wait_idle();
	// Held around compaction's rename/deletes; a loader holds it while it
	// opens a chain.
	std::mutex &store_lock() { return store_lock_; }

	// Totals (read under no lock: monotonic counters for reports).
	uint64_t passes() const { return passes_; }
	uint64_t bases_written() const { return bases_; }
	uint64_t merges_written() const { return merges_; }
	uint64_t max_pass_ns() const { return max_pass_ns_; }
	uint64_t last_pass_ns() const { return last_pass_ns_; }
	uint64_t segments_removed() const { return removed_; }
	uint64_t spares_made() const { return spares_made_; }

private:
	void loop();
	void run_once();
	void spare_loop();

	const Store &store_;
	RetentionPolicy policy_;
	FaultPlan faults_;
	unsigned interval_ms_;
	std::string who_;
	std::mutex mu_, store_lock_;
	std::condition_variable cv_;
	std::condition_variable spare_cv_;
	bool pending_ = false, running_ = false, stop_ = false, spare_pending_ = false;
	std::thread thread_, spare_thread_;
	std::atomic<uint64_t> passes_{0}, bases_{0}, merges_{0}, max_pass_ns_{0}, last_pass_ns_{0}, removed_{0}, spares_made_{0};
	std::string last_spare_error_;
};

} // namespace slsvirt
