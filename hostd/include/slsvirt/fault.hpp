// Named fault points for crash and error-path tests (SLSVIRTD_FAULT / --fault).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "slsvirt/result.hpp"

namespace slsvirt {

enum class FaultKind {
	crash_mid_data,		// SIGKILL self after about half of epoch E's PAGES records
	crash_before_commit,	// SIGKILL self after the data fdatasync, before COMMIT
	fail_write,		// epoch E's data write fails with -EIO
	delay_ack_ms,		// sleep N ms before every EPOCH_ACK
};

struct Fault {
	FaultKind kind;
	uint64_t arg;	// epoch, or milliseconds for delay_ack_ms
};

class FaultPlan {
public:
	// "crash-mid-data:E", "crash-before-commit:E", "fail-write:E",
	// "delay-ack-ms:N"; several separated by ','. "" = no faults.
	[[nodiscard]] static Result<FaultPlan> parse(const std::string &spec);

	bool hits(FaultKind kind, uint64_t epoch) const;
	uint64_t delay_ack_ms() const;
	bool empty() const { return faults_.empty(); }
	std::string describe() const;

	// Kills the calling process with SIGKILL (a crash, no cleanup).
	[[noreturn]] static void crash(const char *where, uint64_t epoch);

private:
	std::vector<Fault> faults_;
};

} // namespace slsvirt
