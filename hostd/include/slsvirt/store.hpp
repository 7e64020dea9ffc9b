// The epoch store: one directory per VM, one segment file per epoch.
// Format and durability rules: docs/store-format.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "slsvirt/fault.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/result.hpp"

struct stat;

namespace slsvirt {

inline constexpr unsigned kDefaultRetain = 8;
// Compact (fold the chain below the oldest retained epoch into a base) once
// that many segments could be removed by doing so.
inline constexpr unsigned kDefaultCompactMin = 64;
// Spare segment files kept for reuse (docs/store-format.md "Spare files"):
// at most this many, holding at most this many bytes, per VM.
inline constexpr unsigned kDefaultSpareFiles = 128;
inline constexpr uint64_t kDefaultSpareBytes = 1ull << 30;
// Spares made ahead (fallocate) while the pool has fewer that fit the last
// epoch: the epoch path then never creates a file.
inline constexpr unsigned kDefaultSpareReserve = 8;

class Uring;

// VM names: [A-Za-z0-9._-]{1,63}, not starting with '.'.
[[nodiscard]] Status check_vm_name(std::string_view name);
// Segment file name of an epoch: 16 lowercase hex digits + ".sls".
std::string segment_file_name(uint64_t epoch);
// Name of a spare (a retired segment file kept for reuse), by the epoch it
// last held: "spare-<16 hex>.sls.free".
std::string spare_file_name(uint64_t epoch);

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

// One page of a RAM block (a delta epoch lists the pages it carries).
struct PageRef {
	uint32_t block;		// index into the blocks passed along
	uint64_t offset;	// byte offset inside the block, multiple of 4096
};

struct WriteStats {
	uint64_t file_bytes = 0;	// bytes the segment occupies
	uint64_t bytes_written = 0;	// bytes handed to io_uring and completed
	uint64_t nr_pages = 0;		// index entries (data pages + ZERO entries)
	uint64_t zero_pages = 0;	// full: zero pages skipped; delta: ZERO entries recorded
	uint64_t data_pages = 0;	// pages whose 4096 bytes were written
	uint64_t devstate_bytes = 0;
	uint64_t write_ns = 0;		// open to durable commit
	uint64_t short_writes = 0;	// short completions resumed
	uint64_t submits = 0;		// io_uring_enter calls
	bool direct_io = false;		// page data written with O_DIRECT
	bool reused_spare = false;	// written in place over a spare file (no allocation)
	uint64_t pad_bytes = 0;		// zeros written after COMMIT to round a new file up to its size class
	// A reused spare still carries its spare name: Store::name_segment()
	// renames written_path to path (done by the write itself unless the
	// store defers naming; slsvirtd does it after the ack).
	std::string written_path, path;
};

enum class SegmentStatus { valid, torn, corrupt };
const char *to_string(SegmentStatus s);

// full: every non-zero page (SLS_EPOCH_F_FULL); delta: only the pages
// written since parent_epoch; base: a full image written by compaction.
enum class SegmentKind { full, delta, base };
const char *to_string(SegmentKind k);

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
	uint64_t file_size = 0;		// of the file (a recycled file may be longer than its segment)
	uint64_t segment_bytes = 0;	// valid: bytes up to the end of the COMMIT block
	bool header_valid = false;	// the file header checked out: `epoch` is the header's
	bool blank_header = false;	// the file header block is all zeros: no segment (a spare)
	uint64_t parent_epoch = 0;	// from the file header
	uint32_t format_version = 0;
	uint32_t header_flags = 0;	// fmt::kSegF*
	bool merged = false;		// a merged delta (written by compaction on its chain's root)
	// From the COMMIT record (valid segments only):
	SegmentKind kind = SegmentKind::full;
	uint64_t epoch_flags = 0;
	uint64_t nr_records = 0;
	uint64_t nr_pages = 0;
	uint64_t nr_zero_pages = 0;
	uint64_t page_bytes = 0;
	uint64_t devstate_bytes = 0;
	uint64_t capture_realtime_ns = 0;
	uint64_t stop_ns = 0;
	uint64_t commit_realtime_ns = 0;
	std::vector<RamBlockDesc> layout;
};

// Checks one segment file (never trusts a length field). expect_epoch 0:
// whatever epoch its header names (files are identified by their header,
// not by their name).
SegmentInfo scan_segment(const std::string &path, uint64_t expect_epoch,
			 std::string_view expect_vm, ScanDepth depth);

// A segment with what restoring its epoch needs: the chain of segments from
// its nearest full/base ancestor (chain.front()) to itself (chain.back()).
struct EpochView {
	SegmentInfo seg;
	bool restorable = false;
	std::string why;		// when not restorable: the first broken link and why
	std::vector<uint64_t> chain;	// restorable only
	// Store::catalog: restored past (branch.hpp Rewind): a restore without
	// an epoch does not pick it. 0: on the current timeline.
	uint64_t rewound_to = 0;
};

// Resolves chains over segments sorted by epoch (as Store::list returns
// them). An epoch is restorable iff every segment of its chain is valid at
// the depth the segments were scanned with, and every delta's RAM layout
// equals its parent's.
std::vector<EpochView> resolve_chains(const std::vector<SegmentInfo> &segments);

// What retention does next (pure; see docs/store-format.md "Retention").
struct RetentionPlan {
	uint64_t oldest_retained = 0;	// 0 = nothing to do
	uint64_t compact_epoch = 0;	// != 0: write a base (or, merge: a merged delta) for this epoch first
	bool merge = false;		// compact_epoch gets a merged delta on its chain's root, not a base
	std::vector<uint64_t> remove;	// segments to delete (after the base, if any), newest first
	std::vector<std::string> remove_paths;	// their files (same order; empty: the epochs' names)
};
struct RetentionPolicy {
	unsigned retain = kDefaultRetain;	// keep at least the newest N restorable epochs (>= 1)
	unsigned compact_min = kDefaultCompactMin;	// compact once >= this many segments would go ...
	unsigned compact_bytes_pct = 100;	// ... and they hold >= this % of the chain root's bytes
	// Below that, once compact_min segments could go, the deltas on the
	// root are merged into one (docs/store-format.md "Retention").
	bool merge = true;
};
// pinned: epochs clones were started from (branch.hpp): each is kept with
// its chain as it is (no base replaces it); UINT64_MAX keeps everything.
RetentionPlan plan_retention(const std::vector<EpochView> &views, const RetentionPolicy &policy,
			     const std::set<uint64_t> &pinned = {});
// plan_retention's `pinned` for a VM: its clones' pins (branch.hpp), and,
// after a rewind and until an epoch newer than the rewind's `newest` is
// restorable, the epoch the VM was restored to.
std::set<uint64_t> timeline_pins(const std::string &vm_dir, const std::vector<EpochView> &views);
// For "no restorable epoch" errors: "" or how many restorable epochs other
// timelines hold (a restore by number takes them).
std::string other_timeline_hint(const std::vector<EpochView> &views);

struct LoadResult {
	SegmentInfo info;		// of the epoch loaded (the chain's last segment)
	std::vector<unsigned char> devstate;
	uint64_t pages_loaded = 0;	// data pages read (all chain segments)
	uint64_t zero_pages = 0;	// ZERO entries applied
	std::vector<uint64_t> chain;	// segments applied, oldest first
};

// Lazy restore: where the newest copy of every page of an epoch lies in
// its chain's segment files, found without reading page data (each page is
// crc-checked by whoever reads it later). Pages absent are zero.
struct LazyPage {
	uint32_t block = 0;		// index into the caller's layout
	uint32_t file = 0;		// index into files
	uint64_t offset = 0;		// in the block
	uint64_t file_offset = 0;	// of the 4096 data bytes
	uint32_t crc = 0;
};
struct LazyMap {
	SegmentInfo info;		// of the epoch (the chain's last segment)
	std::vector<unsigned char> devstate;
	std::vector<uint64_t> chain;	// segment epochs, oldest first: the files' order
	std::vector<UniqueFd> files;	// read-only
	std::vector<LazyPage> pages;	// data pages, sorted by (block, offset)
};

struct CompactStats {
	uint64_t epoch = 0;		// base (or merged delta) written for this epoch (0: none)
	bool merged = false;		// a merged delta on the chain's root, not a base
	uint64_t chain_len = 0;		// segments folded into it
	uint64_t base_bytes = 0;	// bytes of the segment written
	uint64_t pages = 0;		// merged delta: index entries (data + ZERO)
	uint64_t removed = 0;		// segments deleted
	uint64_t load_ns = 0, write_ns = 0, total_ns = 0;
};

// Where compaction may be interrupted by a crash fault (tests).
enum class CompactStage { writing_tmp, tmp_durable, renamed, mid_delete };

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
	// Newest restorable epoch whose whole chain verifies, every page
	// included; -ENOENT if none.
	[[nodiscard]] Result<SegmentInfo> newest_valid() const;

	// Writes a full epoch from `blocks` (zero pages skipped) + devstate with
	// io_uring (`ring`, or one made for this call); returns once the COMMIT
	// record is durable. On failure the
	// partial segment is removed and the epoch is not visible.
	[[nodiscard]] Result<WriteStats> write_epoch(const EpochMeta &meta, std::span<const RamBlockMem> blocks,
						     std::span<const unsigned char> devstate,
						     const FaultPlan &faults = FaultPlan(),
						     Uring *ring = nullptr) const;
	// Writes a delta epoch: exactly `pages` (each once, any order; an
	// all-zero page becomes a ZERO entry), parent meta.parent_epoch. The
	// caller checked that the parent is durable in this store.
	[[nodiscard]] Result<WriteStats> write_delta_epoch(const EpochMeta &meta, std::span<const RamBlockMem> blocks,
							   std::span<const PageRef> pages,
							   std::span<const unsigned char> devstate,
							   const FaultPlan &faults = FaultPlan(),
							   Uring *ring = nullptr) const;

	// Every segment with its chain, oldest first.
	[[nodiscard]] Result<std::vector<EpochView>> catalog(ScanDepth depth) const;
	// Newest restorable epoch (info of its own segment) whose whole chain
	// verifies at `depth`.
	[[nodiscard]] Result<SegmentInfo> newest_restorable(ScanDepth depth) const;

	// Writes a base (full image) for `epoch` into a temp file, makes it
	// durable, renames it over the epoch's segment and fsyncs the directory,
	// then deletes `remove` (newest first). A crash at any point leaves every
	// epoch that was restorable before restorable. `lock` (optional) is held
	// around the rename and the deletes (loaders hold it while they open a chain).
	[[nodiscard]] Result<CompactStats> compact(const RetentionPlan &plan, const FaultPlan &faults = FaultPlan(),
						   std::mutex *lock = nullptr,
						   const std::function<void(CompactStage)> &at_stage = {}) const;
	// Removes "<epoch>.sls.tmp" files a crashed compaction left behind.
	void remove_stale_temp_files() const;
	// What slsvirtd does before it serves a VM: removes stale temp files,
	// renames every valid segment whose file name disagrees with its header
	// to its epoch's name (names are hints that a power loss may leave
	// stale), and takes the spare files (content not a valid segment) into
	// the pool of this Store. Returns the number of files renamed.
	[[nodiscard]] Result<unsigned> recover() const;
	// Spare pool bounds (retired segments beyond them are deleted) and how
	// many spares that fit the last epoch make_spares() keeps ready.
	void set_spare_limits(unsigned max_files, uint64_t max_bytes, unsigned reserve = kDefaultSpareReserve);
	// Background work (slsvirtd's compactor thread beside its passes): while
	// fewer than `reserve` spares fit the last epoch written, creates new
	// ones of its size class with fallocate (no data written), makes their
	// names durable (one directory fsync) and only then pools them. An epoch
	// written over such a spare converts its extents: that fdatasync commits
	// the journal once, but the epoch path creates no file and syncs no
	// directory. Returns the number of spares made.
	[[nodiscard]] Result<unsigned> make_spares() const;
	// Spare files in the pool: path and size, smallest first.
	std::vector<std::pair<std::string, uint64_t>> spare_files() const;
	// false: write_epoch()/write_delta_epoch() leave a reused spare under its
	// spare name; the caller calls name_segment() (after its ack).
	void set_name_on_write(bool on) { name_on_write_ = on; }
	// Renames a segment written over a spare to its epoch's name (no fsync:
	// names are hints, readers go by the header). Best effort, logged.
	void name_segment(const WriteStats &ws) const;
	// O_DIRECT for page data where the filesystem supports it.
	void set_direct_io(bool on) { direct_io_ = on; }
	bool direct_io() const { return direct_io_; }

	// Loads epoch (0 = newest restorable that verifies) into dest, whose
	// idstrs and lengths must match the epoch's RAM layout (any order):
	// its chain's full/base segment, then every delta in parent order.
	// zero_dest: clear dest first (otherwise the caller did). Every page is
	// checked against its crc as it is read. `lock`: see compact().
	[[nodiscard]] Result<LoadResult> load(uint64_t epoch, std::span<const RamBlockMem> dest,
					      bool zero_dest = true, std::mutex *lock = nullptr) const;

	// Lazy restore of epoch (0 = newest restorable at structure depth) into
	// a VM with RAM blocks `dest` (same set of idstr + length). holder != 0:
	// the files are held for that owner (open_segments.hpp) before their
	// headers are checked, so retention deletes instead of recycling them.
	[[nodiscard]] Result<LazyMap> map_epoch(uint64_t epoch, std::span<const RamBlockDesc> dest, uint64_t holder,
						std::mutex *lock = nullptr) const;

	// Retention with chains, synchronously: plan, compact if the plan says
	// so, delete. compact_min: see kDefaultCompactMin.
	[[nodiscard]] Result<CompactStats> apply_retention(const RetentionPolicy &policy,
							   const FaultPlan &faults = FaultPlan()) const;

	std::string temp_path(uint64_t epoch) const;

private:
	// What write_segment writes where.
	struct SegmentSpec {
		std::string path;		// created (O_TRUNC) and written
		bool recycle = false;		// an epoch: over a spare if one fits; a new file is padded to its size class
		bool fsync_dir_if_new = true;	// make a new name durable with the data
		EpochMeta meta;
		uint32_t header_flags = 0;	// fmt::kSegF*
		std::span<const RamBlockMem> blocks;
		bool delta = false;		// true: exactly `pages`; false: every non-zero page
		std::span<const PageRef> pages;
		std::span<const unsigned char> devstate;
		FaultKind crash_mid = FaultKind::crash_mid_data;	// crash point after half the PAGES records
		bool epoch_faults = true;	// fail-write/short-write/... apply (not for compaction)
	};
	
	[[nodiscard]] Result<WriteStats> write_segment(const SegmentSpec &spec, const FaultPlan &faults,
						       Uring *ring) const;
	// newest_first (compaction): segments newest first, each page read only
	// from the newest segment that has it (older copies are neither read
	// nor checked); same result as applying the chain oldest first.
	// deltas_only (a merge): `chain` is the deltas above a root, which is
	// not loaded; `touched` (newest_first only) gets every page an entry
	// of the chain set, data or ZERO, in dest's block order.
	[[nodiscard]] Result<LoadResult> load_chain(const std::vector<uint64_t> &chain,
						    const std::vector<std::string> &paths,
						    std::span<const RamBlockMem> dest, bool zero_dest,
						    std::mutex *lock, bool newest_first = false,
						    bool deltas_only = false,
						    std::vector<PageRef> *touched = nullptr) const;

	// Retires a segment file nothing needs any more: its header is zeroed
	// (so it no longer reads as that epoch) and it becomes a spare, or it is
	// deleted when the pool is full. Caller holds the store lock, if any.
	void retire(const std::string &path, uint64_t epoch) const;
	Result<std::vector<SegmentInfo>> list_once(ScanDepth depth, struct stat *dir_stat) const;
	// A spare of at least `bytes` bytes (the smallest), taken out of the pool.
	std::optional<std::pair<std::string, uint64_t>> take_spare(uint64_t bytes) const;
	void drop_spares() const;	// deletes every spare (disk full)
	void note_epoch_size(uint64_t size_class) const;	// what make_spares() makes

	struct SparePool;
	std::string root_, vm_, vm_dir_, epochs_dir_;
	bool direct_io_ = false;
	bool name_on_write_ = true;
	std::shared_ptr<SparePool> spares_;	// shared by copies of this Store
};

} // namespace slsvirt
