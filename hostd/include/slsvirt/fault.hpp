// Named fault points for crash and error-path tests (SLSVIRTD_FAULT / --fault).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "slsvirt/result.hpp"

namespace slsvirt {

enum class FaultKind {
	crash_mid_data,		// SIGKILL self after about half of epoch E's PAGES records
	crash_before_commit,	// SIGKILL self after the data writes completed, before COMMIT is written
	fail_write,		// epoch E's first write fails with -EIO
	short_write,		// every write of epoch E is first submitted short, then resumed
	enospc,			// epoch E's first page-data write fails with -ENOSPC
	fail_fdatasync,		// epoch E's first fdatasync fails with -EIO
	delay_ack_ms,		// sleep N ms before every EPOCH_ACK
	crash_compaction_writing,	// SIGKILL while writing the base for epoch E (tmp file half written)
	crash_compaction_tmp,	// after the base tmp file for E is durable, before the rename
	crash_compaction_renamed,	// after the rename + directory fsync, before any delete
	crash_mid_compaction,	// after the rename, half of the older segments deleted
};

struct Fault {
	FaultKind kind;
	uint64_t arg;	// epoch, or milliseconds for delay_ack_ms
};

class FaultPlan {
public:
	// NAME:NUMBER items separated by ','; "" = no faults. Names: see
	// known_names() (hostd/README.md describes each).
	[[nodiscard]] static Result<FaultPlan> parse(const std::string &spec);

	bool hits(FaultKind kind, uint64_t epoch) const;
	uint64_t delay_ack_ms() const;
	bool empty() const { return faults_.empty(); }
	std::string describe() const;
	static std::string known_names();

	// Kills the calling process with SIGKILL (a crash, no cleanup).
	[[noreturn]] static void crash(const char *where, uint64_t epoch);

private:
	std::vector<Fault> faults_;
};

} // namespace slsvirt
