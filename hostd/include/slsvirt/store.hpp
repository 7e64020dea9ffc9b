// The epoch store: one directory per VM, one segment file per epoch.
// Format and durability rules: docs/store-format.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "slsvirt/fault.hpp"
#include "slsvirt/result.hpp"

namespace slsvirt {

inline constexpr unsigned kDefaultRetain = 8;

class Uring;

// VM names: [A-Za-z0-9._-]{1,63}, not starting with '.'.
[[nodiscard]] Status check_vm_name(std::string_view name);
// Segment file name of an epoch: 16 lowercase hex digits + ".sls".
std::string segment_file_name(uint64_t epoch);

struct RamBlockDesc {
	std::string idstr;
	uint64_t length = 0;	// bytes, multiple of 4096
};

// A RAM block and the memory that holds its bytes (length bytes at base).
struct RamBlockMem {
	std::string idstr;
	uint64_t length = 0;
	unsigned char *base = nullptr;
};

struct EpochMeta {
	uint64_t epoch = 0;
	uint64_t parent_epoch = 0;
	uint64_t flags = 0;	// SLS_EPOCH_F_*
	uint64_t capture_realtime_ns = 0;
	uint64_t stop_ns = 0;
};

struct WriteStats {
	uint64_t file_bytes = 0;	// bytes the segment occupies
	uint64_t bytes_written = 0;	// bytes handed to io_uring and completed
	uint64_t nr_pages = 0;		// non-zero pages written
	uint64_t zero_pages = 0;	// pages skipped
	uint64_t devstate_bytes = 0;
	uint64_t write_ns = 0;		// open to durable commit
};

enum class SegmentStatus { valid, torn, corrupt };
const char *to_string(SegmentStatus s);

enum class ScanDepth {
	structure,	// every header, index and small payload crc; page data unread
	full,		// also every page's crc
};

struct SegmentInfo {
	uint64_t epoch = 0;
	std::string path;
	SegmentStatus status = SegmentStatus::torn;
	std::string detail;		// why torn/corrupt: which record, which offset
	int bad_record = -1;		// record number (0 = first after the file header)
	uint64_t bad_offset = 0;	// file offset of the problem
	uint64_t file_size = 0;
	uint64_t parent_epoch = 0;	// from the file header
	// From the COMMIT record (valid segments only):
	uint64_t epoch_flags = 0;
	uint64_t nr_records = 0;
	uint64_t nr_pages = 0;
	uint64_t page_bytes = 0;
	uint64_t devstate_bytes = 0;
	uint64_t capture_realtime_ns = 0;
	uint64_t stop_ns = 0;
	uint64_t commit_realtime_ns = 0;
	std::vector<RamBlockDesc> layout;
};

// Checks one segment file (never trusts a length field).
SegmentInfo scan_segment(const std::string &path, uint64_t expect_epoch,
			 std::string_view expect_vm, ScanDepth depth);

struct LoadResult {
	SegmentInfo info;
	std::vector<unsigned char> devstate;
	uint64_t pages_loaded = 0;
};

class Store {
public:
	// Opens (create: creates) <root>/<vm>/epochs/.
	[[nodiscard]] static Result<Store> open(const std::string &root, const std::string &vm, bool create);

	const std::string &vm() const { return vm_; }
	const std::string &vm_dir() const { return vm_dir_; }
	const std::string &epochs_dir() const { return epochs_dir_; }
	std::string segment_path(uint64_t epoch) const;

	// Every segment, oldest first, each with its status.
	[[nodiscard]] Result<std::vector<SegmentInfo>> list(ScanDepth depth) const;
	[[nodiscard]] SegmentInfo scan(uint64_t epoch, ScanDepth depth) const;
	// Newest epoch whose every record and page verifies; -ENOENT if none.
	[[nodiscard]] Result<SegmentInfo> newest_valid() const;

	// Writes a full epoch from `blocks` (zero pages skipped) + devstate with
	// io_uring (`ring`, or one made for this call); returns once the COMMIT
	// record is durable. On failure the
	// partial segment is removed and the epoch is not visible.
	[[nodiscard]] Result<WriteStats> write_epoch(const EpochMeta &meta, std::span<const RamBlockMem> blocks,
						     std::span<const unsigned char> devstate,
						     const FaultPlan &faults = FaultPlan(),
						     Uring *ring = nullptr) const;

	// Loads epoch (0 = newest that verifies) into dest, whose idstrs and
	// lengths must match the epoch's RAM layout (any order). zero_dest:
	// clear dest first (otherwise the caller did). Every page is checked
	// against its crc as it is read.
	[[nodiscard]] Result<LoadResult> load(uint64_t epoch, std::span<const RamBlockMem> dest,
					      bool zero_dest = true) const;

	// Removes the oldest of valid_epochs (ascending) beyond the newest
	// `retain`; valid_epochs is updated to what is left.
	[[nodiscard]] Status apply_retention(std::vector<uint64_t> &valid_epochs, unsigned retain) const;

private:
	[[nodiscard]] Result<LoadResult> load_one(const SegmentInfo &hint, std::span<const RamBlockMem> dest,
						  bool zero_dest) const;

	std::string root_, vm_, vm_dir_, epochs_dir_;
};

} // namespace slsvirt
