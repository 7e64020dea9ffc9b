// On-disk layout of a segment file (one epoch). docs/store-format.md is the
// authoritative description; keep the two in step. All integers little-endian.
#pragma once

#include <cstddef>
#include <cstdint>

namespace slsvirt::fmt {

inline constexpr char kFileMagic[8] = {'S', 'L', 'S', 'V', 'S', 'E', 'G', '\0'};
inline constexpr uint32_t kFormatVersion = 4;	// written; readers accept 1..4
inline constexpr uint32_t kMinFormatVersion = 1;
inline constexpr uint32_t kPageSize = 4096;
inline constexpr uint32_t kAlign = 4096;	// every record starts 4096-aligned
inline constexpr uint32_t kRecordMagic = 0x52534c53u;	// "SLSR"
inline constexpr uint32_t kNameLen = 64;
inline constexpr uint32_t kIdstrLen = 256;
inline constexpr uint32_t kMaxBlocks = 64;
inline constexpr uint32_t kMaxPagesPerRecord = 1024;
// Device state is carried inline in protocol messages (64 MiB max payload),
// so a segment never holds more than this.
inline constexpr uint64_t kMaxDevstate = (64u << 20) - 256;

enum RecordType : uint16_t {
	kRecRamLayout = 1,
	kRecPages = 2,
	kRecDevstate = 3,
	kRecCommit = 4,
	kRecDiscard = 5,	// reserved: memory elasticity (ranges given back)
	kRecDisk = 6,		// reserved: disk blocks
};

// Offset 0 of every segment; occupies the first 4096 bytes (rest zero).
struct FileHeader {
	char magic[8];		// kFileMagic
	uint32_t format_version;	// kFormatVersion
	uint32_t header_size;	// sizeof(FileHeader)
	uint32_t page_size;	// kPageSize
	uint32_t flags;		// kSegF_*; 0 in version 1
	uint64_t epoch;
	uint64_t parent_epoch;	// delta: the epoch it applies on; full/base: as received (lineage only)
	char vm_name[kNameLen];	// NUL-terminated
	uint64_t created_realtime_ns;
	uint64_t reserved[4];	// 0
	uint32_t reserved2;	// 0
	uint32_t header_crc;	// crc32c of all bytes before this field
} __attribute__((packed));
static_assert(sizeof(FileHeader) == 152);

// FileHeader.flags (version 2).
inline constexpr uint32_t kSegFBase = 1u << 0;	// a compacted base: a full image written by compaction
// A merged delta (version 4): written by compaction, the newest copy of every
// page of the deltas it folds, on the chain's root (parent_epoch). Read like
// any delta; the flag tells retention what the last merge wrote.
inline constexpr uint32_t kSegFMerged = 1u << 1;

// Starts every record, at a 4096-aligned file offset.
struct RecordHeader {
	uint32_t magic;		// kRecordMagic
	uint16_t type;		// RecordType
	uint16_t flags;		// 0
	uint64_t epoch;		// == FileHeader.epoch
	uint64_t payload_length;	// bytes after this header (record padded to 4096 after)
	uint32_t count;		// RAM_LAYOUT: blocks, PAGES: pages, else 0
	uint32_t payload_crc;	// crc32c of the checked part of the payload (see type)
	uint64_t reserved[3];	// 0
	uint32_t reserved2;	// 0
	uint32_t header_crc;	// crc32c of all bytes before this field
} __attribute__((packed));
static_assert(sizeof(RecordHeader) == 64);

// RAM_LAYOUT payload: count x LayoutBlock; payload_crc covers all of it.
struct LayoutBlock {
	char idstr[kIdstrLen];	// NUL-terminated, unique within the layout
	uint64_t length;	// bytes, multiple of kPageSize, > 0
	uint64_t reserved;	// 0
} __attribute__((packed));
static_assert(sizeof(LayoutBlock) == 272);

// PAGES payload: count x PageIndexEntry (payload_crc covers exactly these
// count*16 bytes), zero padding up to the next 4096 boundary of the file,
// then one 4096-byte data slot per non-ZERO entry, in index order.
// Version 1 had a u32 block_id (always < 64), so its bytes read as
// block_id + flags 0 here.
struct PageIndexEntry {
	uint16_t block_id;	// index into RAM_LAYOUT
	uint16_t flags;		// kPageFZero; 0 in version 1
	uint32_t page_crc;	// crc32c of the 4096 data bytes; 0 for a ZERO entry
	uint64_t offset;	// byte offset inside the block, multiple of kPageSize
} __attribute__((packed));
// The page is all zero now: no data slot (delta segments only; a full or
// base segment simply omits zero pages).
inline constexpr uint16_t kPageFZero = 1u << 0;
static_assert(sizeof(PageIndexEntry) == 16);

// COMMIT payload (payload_crc covers it). Written after every record before
// it and made durable by the same fdatasync (version 3): content_crc commits
// to the whole segment, so a COMMIT that reached the disk without some data
// is detected (docs/store-format.md "Write order and durability").
struct CommitPayload {
	uint64_t epoch;
	uint64_t parent_epoch;
	uint64_t epoch_flags;	// SLS_EPOCH_F_* as received
	uint64_t nr_records;	// records before COMMIT
	uint64_t nr_pages;	// index entries in all PAGES records (data + ZERO)
	uint64_t page_bytes;	// (nr_pages - nr_zero_pages) * 4096: data stored
	uint64_t devstate_bytes;
	uint64_t commit_offset;	// file offset of the COMMIT record == bytes before it
	uint64_t capture_realtime_ns;
	uint64_t stop_ns;
	uint64_t commit_realtime_ns;
	uint64_t nr_zero_pages;	// ZERO entries among nr_pages (0 in version 1)
	uint32_t content_crc;	// version 3: content_crc() of the segment; versions 1-2: 0
	uint32_t reserved32;	// 0
	uint64_t reserved[3];	// 0
} __attribute__((packed));
static_assert(sizeof(CommitPayload) == 128);

// Version 3 COMMIT.content_crc: crc32c over the FileHeader's bytes 0..147
// followed by bytes 0..59 of every RecordHeader before COMMIT, in file order
// -- each header *without* its own header_crc: a crc over data followed by
// its own crc is a constant, so including it would make the content crc blind
// to any self-consistent header. Each record header's payload_crc covers its
// payload (PAGES: the index, whose entries carry every page's crc), so this
// chains to every byte of the segment.
inline constexpr uint32_t kFormatContentCrc = 3;	// first version with content_crc
// Version 4: a segment may be written over a recycled (spare) file. The file
// may continue after the COMMIT block (stale bytes, never read), and a
// segment with no COMMIT record of its epoch is torn whatever bytes stand
// where its next record belongs (a recycled file's leftovers).
inline constexpr uint32_t kFormatRecycled = 4;

constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// PAGES: payload offset of the page data for a record of n pages.
constexpr uint64_t pages_data_offset(uint64_t n)
{
	return align_up(sizeof(RecordHeader) + n * sizeof(PageIndexEntry), kAlign) - sizeof(RecordHeader);
}
// ... with n index entries of which `data` carry a data slot.
constexpr uint64_t pages_payload_length(uint64_t n, uint64_t data) { return pages_data_offset(n) + data * kPageSize; }
constexpr uint64_t pages_payload_length(uint64_t n) { return pages_payload_length(n, n); }
// Bytes a record with this payload occupies in the file.
constexpr uint64_t record_span(uint64_t payload_length)
{
	return align_up(sizeof(RecordHeader) + payload_length, kAlign);
}

} // namespace slsvirt::fmt
