// Segment scanner/verifier/loader and the Store's directory handling.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <sys/mman.h>
#include <limits.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "slsvirt/branch.hpp"
#include "slsvirt/crc32c.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/log.hpp"
#include "slsvirt/open_segments.hpp"
#include "slsvirt/proto.h"
#include "slsvirt/store.hpp"
#include "slsvirt/store_format.hpp"

namespace slsvirt {

Status check_vm_name(std::string_view name)
{
	if (name.empty() || name.size() > 63)
		return make_error(-EINVAL, "VM name must be 1..63 characters (got %zu)", name.size());
	if (name[0] == '.')
		return make_error(-EINVAL, "VM name '%.*s' must not start with '.'", static_cast<int>(name.size()),
				  name.data());
	for (char c : name) {
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
			  c == '_' || c == '-';
		if (!ok)
			return make_error(-EINVAL, "VM name may only contain [A-Za-z0-9._-] (bad byte 0x%02x)",
					  static_cast<unsigned char>(c));
	}
	return {};
}

std::string segment_file_name(uint64_t epoch)
{
	return strf("%016llx.sls", static_cast<unsigned long long>(epoch));
}

std::string spare_file_name(uint64_t epoch)
{
	return strf("spare-%016llx.sls.free", static_cast<unsigned long long>(epoch));
}

const char *to_string(SegmentKind k)
{
	switch (k) {
	case SegmentKind::full: return "full";
	case SegmentKind::delta: return "delta";
	case SegmentKind::base: return "base";
	}
	return "?";
}

const char *to_string(SegmentStatus s)
{
	switch (s) {
	case SegmentStatus::valid: return "valid";
	case SegmentStatus::torn: return "torn";
	case SegmentStatus::corrupt: return "corrupt";
	}
	return "?";
}

namespace {

const char *record_type_name(uint16_t t)
{
	switch (t) {
	case fmt::kRecRamLayout: return "RAM_LAYOUT";
	case fmt::kRecPages: return "PAGES";
	case fmt::kRecDevstate: return "DEVSTATE";
	case fmt::kRecCommit: return "COMMIT";
	case fmt::kRecDiscard: return "DISCARD";
	case fmt::kRecDisk: return "DISK";
	}
	return "unknown";
}

bool all_zero(const void *p, size_t n)
{
	const auto *b = static_cast<const unsigned char *>(p);
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

struct PagesRecord {
	uint32_t recno;
	uint64_t offset;	// of the record header
	uint64_t data_pos;	// file offset of the first page
	std::vector<fmt::PageIndexEntry> index;
};

struct Parsed {
	std::vector<PagesRecord> pages;
	std::vector<unsigned char> devstate;
};

class Scanner {
public:
	Scanner(SegmentInfo &info) : info_(info) {}

	void torn(int rec, uint64_t off, const char *f, ...) __attribute__((format(printf, 4, 5)))
	{
		va_list ap;
		va_start(ap, f);
		set(SegmentStatus::torn, rec, off, vstrf(f, ap));
		va_end(ap);
	}
	void corrupt(int rec, uint64_t off, const char *f, ...) __attribute__((format(printf, 4, 5)))
	{
		va_list ap;
		va_start(ap, f);
		set(SegmentStatus::corrupt, rec, off, vstrf(f, ap));
		va_end(ap);
	}

private:
	void set(SegmentStatus s, int rec, uint64_t off, std::string msg)
	{
		info_.status = s;
		info_.bad_record = rec;
		info_.bad_offset = off;
		info_.detail = rec > 0 ? strf("record %d at offset %llu: %s", rec, static_cast<unsigned long long>(off),
					      msg.c_str())
				       : strf("offset %llu: %s", static_cast<unsigned long long>(off), msg.c_str());
	}
	SegmentInfo &info_;
};

uint64_t max_payload(uint16_t type)
{
	switch (type) {
	case fmt::kRecRamLayout: return fmt::kMaxBlocks * sizeof(fmt::LayoutBlock);
	case fmt::kRecPages: return fmt::pages_payload_length(fmt::kMaxPagesPerRecord);
	case fmt::kRecDevstate: return fmt::kMaxDevstate;
	case fmt::kRecCommit: return sizeof(fmt::CommitPayload);
	}
	return 0;
}

// Walks the segment; info.status says what was found. parsed (optional)
// receives page indices and device state for a loader.
void scan_fd_walk(int fd, SegmentInfo &info, uint64_t expect_epoch, std::string_view expect_vm, ScanDepth depth,
		  Parsed *parsed)
{
	Scanner sc(info);
	info.status = SegmentStatus::torn;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		sc.corrupt(0, 0, "stat: %s", strerror(errno));
		return;
	}
	const uint64_t size = static_cast<uint64_t>(st.st_size);
	info.file_size = size;

	// File header.
	if (size < fmt::kAlign) {
		sc.torn(0, 0, "file header truncated (%llu of %u bytes)", static_cast<unsigned long long>(size),
			fmt::kAlign);
		return;
	}
	fmt::FileHeader fh;
	if (Status s = pread_full(fd, &fh, sizeof(fh), 0, "read file header"); !s.ok()) {
		sc.corrupt(0, 0, "%s", s.message().c_str());
		return;
	}
	if (all_zero(&fh, sizeof(fh))) {
		info.blank_header = true;
		sc.torn(0, 0, "file header is zero-filled (never written)");
		return;
	}
	if (memcmp(fh.magic, fmt::kFileMagic, sizeof(fh.magic)) != 0) {
		sc.corrupt(0, 0, "bad file magic (not an slsvirt segment)");
		return;
	}
	if (fh.format_version < fmt::kMinFormatVersion || fh.format_version > fmt::kFormatVersion) {
		sc.corrupt(0, 0, "unsupported format version %u (this build reads versions %u..%u)",
			   fh.format_version, fmt::kMinFormatVersion, fmt::kFormatVersion);
		return;
	}
	const bool v1 = fh.format_version == 1;
	if (fh.header_size != sizeof(fh)) {
		sc.corrupt(0, 0, "file header size %u, expected %zu", fh.header_size, sizeof(fh));
		return;
	}
	uint32_t crc = crc32c(&fh, offsetof(fmt::FileHeader, header_crc));
	if (crc != fh.header_crc) {
		sc.corrupt(0, 0, "file header crc mismatch (stored 0x%08x, computed 0x%08x)", fh.header_crc, crc);
		return;
	}
	const uint32_t allowed_flags = v1 ? 0 : fh.format_version < 4 ? fmt::kSegFBase : fmt::kSegFBase | fmt::kSegFMerged;
	if (fh.page_size != fmt::kPageSize || (fh.flags & ~allowed_flags) || fh.reserved2 != 0 ||
	    !all_zero(fh.reserved, sizeof(fh.reserved))) {
		sc.corrupt(0, 0,
			   "file header: page size %u / flags 0x%x / reserved fields not as format %u requires",
			   fh.page_size, fh.flags, fh.format_version);
		return;
	}
	info.format_version = fh.format_version;
	info.header_flags = fh.flags;
	info.merged = fh.flags & fmt::kSegFMerged;
	if (expect_epoch && fh.epoch != expect_epoch) {
		sc.corrupt(0, 0, "file header says epoch %llu, expected epoch %llu",
			   static_cast<unsigned long long>(fh.epoch), static_cast<unsigned long long>(expect_epoch));
		return;
	}
	if (memchr(fh.vm_name, '\0', sizeof(fh.vm_name)) == nullptr ||
	    (!expect_vm.empty() && expect_vm != std::string_view(fh.vm_name))) {
		sc.corrupt(0, 0, "file header names another VM");
		return;
	}
	info.epoch = fh.epoch;
	info.header_valid = true;
	info.parent_epoch = fh.parent_epoch;
	const bool has_content_crc = fh.format_version >= fmt::kFormatContentCrc;
	uint32_t content_crc = crc32c(&fh, offsetof(fmt::FileHeader, header_crc));	// file header + record headers before COMMIT

	uint64_t off = fmt::kAlign;
	int recno = 0;
	uint64_t nr_pages = 0, nr_zero = 0;
	bool have_devstate = false;
	std::vector<unsigned char> idxbuf, databuf;
	for (;;) {
		recno++;
		if (off >= size) {
			sc.torn(recno, off, "no commit record (file ends after %d records%s)", recno - 1,
				off > size ? ", the last one's padding cut short" : "");
			return;
		}
		if (size - off < sizeof(fmt::RecordHeader)) {
			sc.torn(recno, off, "record header truncated (%llu bytes left)",
				static_cast<unsigned long long>(size - off));
			return;
		}
		fmt::RecordHeader h;
		if (Status s = pread_full(fd, &h, sizeof(h), static_cast<off_t>(off), "read record header"); !s.ok()) {
			sc.corrupt(recno, off, "%s", s.message().c_str());
			return;
		}
		if (all_zero(&h, sizeof(h))) {
			sc.torn(recno, off, "zero-filled where a record header belongs (no commit record)");
			return;
		}
		if (h.magic != fmt::kRecordMagic) {
			sc.corrupt(recno, off, "bad record magic 0x%08x", h.magic);
			return;
		}
		crc = crc32c(&h, offsetof(fmt::RecordHeader, header_crc));
		if (crc != h.header_crc) {
			sc.corrupt(recno, off, "record header crc mismatch (stored 0x%08x, computed 0x%08x)",
				   h.header_crc, crc);
			return;
		}
		const char *tn = record_type_name(h.type);
		if (h.epoch != fh.epoch || h.flags || h.reserved2 || !all_zero(h.reserved, sizeof(h.reserved))) {
			sc.corrupt(recno, off, "%s record: epoch %llu / flags / reserved fields invalid", tn,
				   static_cast<unsigned long long>(h.epoch));
			return;
		}
		if (max_payload(h.type) == 0) {
			sc.corrupt(recno, off, "record type %u (%s) is not allowed in format version %u", h.type, tn,
				   fh.format_version);
			return;
		}
		if (h.payload_length > max_payload(h.type)) {
			sc.corrupt(recno, off, "%s payload length %llu exceeds the maximum %llu", tn,
				   static_cast<unsigned long long>(h.payload_length),
				   static_cast<unsigned long long>(max_payload(h.type)));
			return;
		}
		if (recno == 1 && h.type != fmt::kRecRamLayout) {
			sc.corrupt(recno, off, "first record is %s, expected RAM_LAYOUT", tn);
			return;
		}
		if (recno != 1 && h.type == fmt::kRecRamLayout) {
			sc.corrupt(recno, off, "second RAM_LAYOUT record");
			return;
		}
		if (h.type != fmt::kRecCommit)
			content_crc = crc32c(&h, offsetof(fmt::RecordHeader, header_crc), content_crc);
		// Type-specific length rules, all before reading any payload.
		uint64_t checked_len = h.payload_length;	// bytes payload_crc covers
		switch (h.type) {
		case fmt::kRecRamLayout:
			if (h.count < 1 || h.count > fmt::kMaxBlocks ||
			    h.payload_length != h.count * sizeof(fmt::LayoutBlock)) {
				sc.corrupt(recno, off, "RAM_LAYOUT with %u blocks and %llu payload bytes", h.count,
					   static_cast<unsigned long long>(h.payload_length));
				return;
			}
			break;
		case fmt::kRecPages:
			// Index, padding, then one data slot per non-ZERO entry: the
			// exact slot count is checked once the index is read.
			if (h.count < 1 || h.count > fmt::kMaxPagesPerRecord ||
			    h.payload_length < fmt::pages_data_offset(h.count) ||
			    (h.payload_length - fmt::pages_data_offset(h.count)) % fmt::kPageSize ||
			    h.payload_length > fmt::pages_payload_length(h.count)) {
				sc.corrupt(recno, off, "PAGES with %u pages and %llu payload bytes", h.count,
					   static_cast<unsigned long long>(h.payload_length));
				return;
			}
			checked_len = h.count * sizeof(fmt::PageIndexEntry);
			break;
		case fmt::kRecDevstate:
			if (h.count != 0 || have_devstate) {
				sc.corrupt(recno, off, "unexpected DEVSTATE record (count %u)", h.count);
				return;
			}
			break;
		case fmt::kRecCommit:
			if (h.count != 0 || h.payload_length != sizeof(fmt::CommitPayload)) {
				sc.corrupt(recno, off, "COMMIT with %llu payload bytes, expected %zu",
					   static_cast<unsigned long long>(h.payload_length),
					   sizeof(fmt::CommitPayload));
				return;
			}
			break;
		}
		const uint64_t avail = size - off - sizeof(h);
		if (h.payload_length > avail) {
			sc.torn(recno, off, "%s record claims %llu payload bytes but only %llu remain (truncated)", tn,
				static_cast<unsigned long long>(h.payload_length),
				static_cast<unsigned long long>(avail));
			return;
		}
		idxbuf.resize(checked_len);
		if (Status s = pread_full(fd, idxbuf.data(), checked_len, static_cast<off_t>(off + sizeof(h)),
					  "read payload");
		    !s.ok()) {
			sc.corrupt(recno, off, "%s", s.message().c_str());
			return;
		}
		crc = crc32c(idxbuf.data(), checked_len);
		if (crc != h.payload_crc) {
			sc.corrupt(recno, off, "%s payload crc mismatch (stored 0x%08x, computed 0x%08x)", tn,
				   h.payload_crc, crc);
			return;
		}

		if (h.type == fmt::kRecRamLayout) {
			for (uint32_t i = 0; i < h.count; i++) {
				fmt::LayoutBlock lb;
				memcpy(&lb, idxbuf.data() + i * sizeof(lb), sizeof(lb));
				size_t n = strnlen(lb.idstr, sizeof(lb.idstr));
				if (n == 0 || n == sizeof(lb.idstr) || lb.length == 0 || lb.length % fmt::kPageSize ||
				    lb.reserved) {
					sc.corrupt(recno, off, "RAM_LAYOUT block %u invalid", i);
					return;
				}
				for (const auto &b : info.layout)
					if (b.idstr == lb.idstr) {
						sc.corrupt(recno, off, "RAM_LAYOUT lists '%s' twice", lb.idstr);
						return;
					}
				info.layout.push_back({std::string(lb.idstr, n), lb.length});
			}
		} else if (h.type == fmt::kRecPages) {
			PagesRecord pr{static_cast<uint32_t>(recno), off, off + sizeof(h) + fmt::pages_data_offset(h.count),
				       std::vector<fmt::PageIndexEntry>(h.count)};
			memcpy(pr.index.data(), idxbuf.data(), checked_len);
			uint64_t ndata = 0;
			for (uint32_t i = 0; i < h.count; i++) {
				const auto &e = pr.index[i];
				if (e.block_id >= info.layout.size() || e.offset % fmt::kPageSize ||
				    e.offset >= info.layout[e.block_id].length) {
					sc.corrupt(recno, off, "PAGES index entry %u: block %u offset %llu outside the layout",
						   i, e.block_id, static_cast<unsigned long long>(e.offset));
					return;
				}
				const uint16_t allowed = v1 ? 0 : fmt::kPageFZero;
				if ((e.flags & ~allowed) || ((e.flags & fmt::kPageFZero) && e.page_crc != 0)) {
					sc.corrupt(recno, off, "PAGES index entry %u: flags 0x%x / crc invalid for format %u",
						   i, e.flags, fh.format_version);
					return;
				}
				if (!(e.flags & fmt::kPageFZero))
					ndata++;
			}
			if (h.payload_length != fmt::pages_payload_length(h.count, ndata)) {
				sc.corrupt(recno, off,
					   "PAGES with %u entries (%llu with data) but %llu payload bytes (expected %llu)",
					   h.count, static_cast<unsigned long long>(ndata),
					   static_cast<unsigned long long>(h.payload_length),
					   static_cast<unsigned long long>(fmt::pages_payload_length(h.count, ndata)));
				return;
			}
			if (depth == ScanDepth::full) {
				databuf.resize(static_cast<size_t>(ndata) * fmt::kPageSize);
				if (Status s = pread_full(fd, databuf.data(), databuf.size(),
							  static_cast<off_t>(pr.data_pos), "read page data");
				    !s.ok()) {
					sc.corrupt(recno, off, "%s", s.message().c_str());
					return;
				}
				uint64_t slot = 0;
				for (uint32_t i = 0; i < h.count; i++) {
					const auto &e = pr.index[i];
					if (e.flags & fmt::kPageFZero)
						continue;
					uint32_t c = crc32c(databuf.data() + slot * fmt::kPageSize, fmt::kPageSize);
					if (c != e.page_crc) {
						sc.corrupt(recno, off,
							   "page %u (block '%s' offset 0x%llx, file offset %llu) crc "
							   "mismatch (stored 0x%08x, computed 0x%08x)",
							   i, info.layout[e.block_id].idstr.c_str(),
							   static_cast<unsigned long long>(e.offset),
							   static_cast<unsigned long long>(pr.data_pos + slot * fmt::kPageSize),
							   e.page_crc, c);
						return;
					}
					slot++;
				}
			}
			nr_pages += h.count;
			nr_zero += h.count - ndata;
			if (parsed)
				parsed->pages.push_back(std::move(pr));
		} else if (h.type == fmt::kRecDevstate) {
			have_devstate = true;
			info.devstate_bytes = h.payload_length;
			if (parsed)
				parsed->devstate = idxbuf;
		} else if (h.type == fmt::kRecCommit) {
			fmt::CommitPayload c;
			memcpy(&c, idxbuf.data(), sizeof(c));
			if (c.epoch != fh.epoch || c.parent_epoch != fh.parent_epoch ||
			    c.nr_records != static_cast<uint64_t>(recno - 1) || c.nr_pages != nr_pages ||
			    c.nr_zero_pages != nr_zero || c.page_bytes != (nr_pages - nr_zero) * fmt::kPageSize ||
			    c.commit_offset != off || c.devstate_bytes != info.devstate_bytes || !have_devstate ||
			    c.reserved32 != 0 || !all_zero(c.reserved, sizeof(c.reserved)) ||
			    (!has_content_crc && c.content_crc != 0)) {
				sc.corrupt(recno, off,
					   "COMMIT does not match the records before it (commit says %llu records, "
					   "%llu pages; found %d records, %llu pages)",
					   static_cast<unsigned long long>(c.nr_records),
					   static_cast<unsigned long long>(c.nr_pages), recno - 1,
					   static_cast<unsigned long long>(nr_pages));
				return;
			}
			// Version 3: data and COMMIT share one fdatasync, so the COMMIT
			// must prove it belongs to exactly these records.
			if (has_content_crc && c.content_crc != content_crc) {
				sc.corrupt(recno, off,
					   "COMMIT content crc mismatch (stored 0x%08x, computed 0x%08x over the file "
					   "header and %d record headers)",
					   c.content_crc, content_crc, recno - 1);
				return;
			}
			if (size < off + fmt::kAlign) {
				sc.torn(recno, off, "commit block truncated");
				return;
			}
			if (size > off + fmt::kAlign && fh.format_version < fmt::kFormatRecycled) {
				sc.corrupt(recno, off, "%llu trailing bytes after the commit record",
					   static_cast<unsigned long long>(size - off - fmt::kAlign));
				return;
			}
			// Kind: FULL flag (every page) or a delta on a parent; a base
			// is full. Only a delta may carry ZERO entries.
			const bool full = c.epoch_flags & 1;	// SLS_EPOCH_F_FULL
			const bool base = fh.flags & fmt::kSegFBase;
			const bool merged = fh.flags & fmt::kSegFMerged;
			if ((c.epoch_flags & ~1ull) || (base && !full) || (merged && full) || (!full && c.parent_epoch == 0) ||
			    (full && nr_zero) || c.parent_epoch >= c.epoch || (v1 && !full)) {
				sc.corrupt(recno, off,
					   "COMMIT: epoch flags 0x%llx, parent %llu, %llu ZERO entries, header flags 0x%x "
					   "do not form a full, delta, merged delta or base segment",
					   static_cast<unsigned long long>(c.epoch_flags),
					   static_cast<unsigned long long>(c.parent_epoch),
					   static_cast<unsigned long long>(nr_zero), fh.flags);
				return;
			}
			info.kind = base ? SegmentKind::base : full ? SegmentKind::full : SegmentKind::delta;
			info.epoch_flags = c.epoch_flags;
			info.nr_zero_pages = c.nr_zero_pages;
			info.nr_records = c.nr_records;
			info.nr_pages = c.nr_pages;
			info.page_bytes = c.page_bytes;
			info.capture_realtime_ns = c.capture_realtime_ns;
			info.stop_ns = c.stop_ns;
			info.commit_realtime_ns = c.commit_realtime_ns;
			info.segment_bytes = off + fmt::kAlign;
			info.status = SegmentStatus::valid;
			info.detail.clear();
			return;
		}
		off += fmt::record_span(h.payload_length);
	}
}

// Is there a COMMIT record header of `epoch` (magic, header crc, type,
// epoch) at a 4096-aligned offset from `from` on? Only asked about a broken
// version-4 segment, to tell an unfinished write over a recycled file (no
// COMMIT: torn) from damage to a committed segment (corrupt).
bool commit_follows(int fd, uint64_t from, uint64_t size, uint64_t epoch)
{
	constexpr size_t kChunk = 1u << 20;
	std::vector<unsigned char> buf(kChunk);
	for (uint64_t at = fmt::align_up(from, fmt::kAlign); at + fmt::kAlign <= size;) {
		const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, (size - at) / fmt::kAlign * fmt::kAlign));
		if (!pread_full(fd, buf.data(), n, static_cast<off_t>(at), "read").ok())
			return true;	// cannot tell: keep it corrupt
		for (size_t o = 0; o < n; o += fmt::kAlign) {
			fmt::RecordHeader h;
			memcpy(&h, buf.data() + o, sizeof(h));
			if (h.magic == fmt::kRecordMagic && h.type == fmt::kRecCommit && h.epoch == epoch &&
			    h.header_crc == crc32c(&h, offsetof(fmt::RecordHeader, header_crc)))
				return true;
		}
		at += n;
	}
	return false;
}

void scan_fd(int fd, SegmentInfo &info, uint64_t expect_epoch, std::string_view expect_vm, ScanDepth depth,
	     Parsed *parsed)
{
	scan_fd_walk(fd, info, expect_epoch, expect_vm, depth, parsed);
	// Version 4 may be written over a recycled file: a write that did not
	// finish leaves the old file's bytes where the next record belongs. With
	// no COMMIT of this epoch anywhere after the break, the epoch simply was
	// not completed (torn); with one, a committed segment is damaged.
	if (info.status == SegmentStatus::corrupt && info.header_valid &&
	    info.format_version >= fmt::kFormatRecycled && info.bad_record > 0 &&
	    !commit_follows(fd, info.bad_offset, info.file_size, info.epoch)) {
		info.status = SegmentStatus::torn;
		info.detail += strf(" (no commit record of epoch %llu follows: an unfinished write, e.g. over a "
				    "recycled file's old bytes)",
				    static_cast<unsigned long long>(info.epoch));
	}
}

SegmentInfo scan_path(const std::string &path, uint64_t expect_epoch, std::string_view vm, ScanDepth depth,
		      Parsed *parsed)
{
	SegmentInfo info;
	info.epoch = expect_epoch;
	info.path = path;
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.valid()) {
		info.status = errno == ENOENT ? SegmentStatus::torn : SegmentStatus::corrupt;
		info.detail = strf("open: %s", strerror(errno));
		return info;
	}
	scan_fd(fd.get(), info, expect_epoch, vm, depth, parsed);
	return info;
}

} // namespace

SegmentInfo scan_segment(const std::string &path, uint64_t expect_epoch, std::string_view expect_vm,
			 ScanDepth depth)
{
	return scan_path(path, expect_epoch, expect_vm, depth, nullptr);
}

Result<Store> Store::open(const std::string &root, const std::string &vm, bool create)
{
	SLS_TRY(check_vm_name(vm));
	if (root.empty())
		return make_error(-EINVAL, "empty store root");
	Store s;
	s.root_ = root;
	s.vm_ = vm;
	s.vm_dir_ = root + "/" + vm;
	s.epochs_dir_ = s.vm_dir_ + "/epochs";
	s.spares_ = std::make_shared<SparePool>();
	if (create) {
		SLS_TRY(make_dirs(s.epochs_dir_, 0700));
	} else {
		struct stat st;
		if (::stat(s.epochs_dir_.c_str(), &st) < 0)
			return errno_error("no store for VM '" + vm + "' (" + s.epochs_dir_ + ")");
	}
	return s;
}

std::string Store::segment_path(uint64_t epoch) const { return epochs_dir_ + "/" + segment_file_name(epoch); }

SegmentInfo Store::scan(uint64_t epoch, ScanDepth depth) const
{
	// Usually the epoch's file has its name; if not (a power loss kept an
	// old name), the file whose header names the epoch.
	SegmentInfo info = scan_path(segment_path(epoch), 0, vm_, depth, nullptr);
	if (info.header_valid && info.epoch == epoch)
		return info;
	if (auto all = list(ScanDepth::structure); all.ok())
		for (const auto &s : *all)
			if (s.epoch == epoch && s.path != info.path)
				return scan_path(s.path, epoch, vm_, depth, nullptr);
	return scan_path(segment_path(epoch), epoch, vm_, depth, nullptr);
}

namespace {

// Epoch named by a segment file name ("<16 hex>.sls"), 0 if it is not one.
uint64_t epoch_of_name(const std::string &n)
{
	if (n.size() != 20 || n.compare(16, 4, ".sls") != 0)
		return 0;
	uint64_t e = 0;
	for (int i = 0; i < 16; i++) {
		char c = n[static_cast<size_t>(i)];
		int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
		if (v < 0)
			return 0;
		e = e << 4 | static_cast<uint64_t>(v);
	}
	return e;
}

bool is_spare_name(const std::string &n)
{
	return n.size() > 15 && n.compare(0, 6, "spare-") == 0 && n.compare(n.size() - 9, 9, ".sls.free") == 0;
}

// Names of the regular files in dir that may hold a segment: everything but
// hidden files and compaction's "*.tmp". The directory is read again if it
// changed while it was read (a concurrent rename can hide an entry from one
// readdir pass: the writer names a reused spare right after its ack).
bool same_mtime(const struct stat &a, const struct stat &b)
{
	return a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
	       a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

Result<std::vector<std::string>> segment_candidates(const std::string &dir, struct stat *dir_stat = nullptr)
{
	for (int attempt = 0;; attempt++) {
		struct stat before, after;
		if (::stat(dir.c_str(), &before) < 0)
			return errno_error("stat " + dir);
		DIR *d = ::opendir(dir.c_str());
		if (!d)
			return errno_error("open " + dir);
		std::vector<std::string> names;
		while (struct dirent *de = ::readdir(d)) {
			std::string n = de->d_name;
			if (n.empty() || n[0] == '.' || (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0))
				continue;
			if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
				continue;
			names.push_back(std::move(n));
		}
		::closedir(d);
		if (::stat(dir.c_str(), &after) < 0)
			return errno_error("stat " + dir);
		if (attempt >= 20 || same_mtime(before, after)) {
			if (dir_stat)
				*dir_stat = after;
			return names;
		}
	}
}

// Which of two files claiming the same epoch is the segment: a valid one,
// a base over anything else (compaction replaced that epoch's delta), then
// the one carrying the epoch's own name.
bool better_copy(const SegmentInfo &a, const SegmentInfo &b, const std::string &canonical)
{
	auto rank = [&](const SegmentInfo &x) {
		return (x.status == SegmentStatus::valid ? 4 : 0) + (x.kind == SegmentKind::base ? 2 : 0) +
		       (x.path == canonical ? 1 : 0);
	};
	return rank(a) > rank(b);
}

} // namespace

// Every file is identified by its header, not by its name: a power loss may
// keep a renamed file's old name (a reused spare, a retired segment). A file
// whose header does not check out counts for the epoch its name gives (a torn
// write into a new file) or, without such a name, is a spare and not listed.
Result<std::vector<SegmentInfo>> Store::list(ScanDepth depth) const
{
	// A listing is read again (a few times at most) when the directory
	// changed while its files were scanned: compaction retiring segments
	// beside us could otherwise show a chain with a link missing.
	for (int pass = 0;; pass++) {
		struct stat before, after;
		auto r = list_once(depth, &before);
		if (!r || pass >= 3 || ::stat(epochs_dir_.c_str(), &after) < 0 || same_mtime(before, after))
			return r;
	}
}

Result<std::vector<SegmentInfo>> Store::list_once(ScanDepth depth, struct stat *dir_stat) const
{
	auto names = segment_candidates(epochs_dir_, dir_stat);
	if (!names)
		return names.error();
	std::map<uint64_t, SegmentInfo> by_epoch;
	for (const auto &n : *names) {
		const std::string path = epochs_dir_ + "/" + n;
		SegmentInfo info = scan_path(path, 0, vm_, depth, nullptr);
		uint64_t e = info.header_valid ? info.epoch : epoch_of_name(n);
		// A blank file header carries no epoch and can never start a valid
		// segment, whatever the name: a spare (a retirement interrupted
		// between zeroing the header and the rename), or a write that never
		// got its header to the disk -- no epoch either way.
		if (e == 0 || info.blank_header)
			continue;	// a spare, or not ours
		if (!info.header_valid) {
			struct stat st;
			// Retention/compaction may delete a segment between readdir()
			// and its scan: it left the store, it is not torn.
			if (::stat(path.c_str(), &st) < 0 && errno == ENOENT)
				continue;
			if (!S_ISREG(st.st_mode))
				continue;
			info.epoch = e;
		}
		auto it = by_epoch.find(e);
		if (it == by_epoch.end())
			by_epoch.emplace(e, std::move(info));
		else if (better_copy(info, it->second, segment_path(e)))
			it->second = std::move(info);
	}
	std::vector<SegmentInfo> out;
	out.reserve(by_epoch.size());
	for (auto &[e, info] : by_epoch)
		out.push_back(std::move(info));
	return out;
}

std::string Store::temp_path(uint64_t epoch) const { return segment_path(epoch) + ".tmp"; }

void Store::remove_stale_temp_files() const
{
	DIR *d = ::opendir(epochs_dir_.c_str());
	if (!d)
		return;
	std::vector<std::string> stale;
	while (struct dirent *de = ::readdir(d)) {
		std::string n = de->d_name;
		if (n.size() == 24 && n.compare(16, 8, ".sls.tmp") == 0)
			stale.push_back(epochs_dir_ + "/" + n);
	}
	::closedir(d);
	for (const auto &p : stale) {
		SLS_LOG_INFO("removing %s left by an interrupted compaction", p.c_str());
		::unlink(p.c_str());
	}
}

struct Store::SparePool {
	std::mutex mu;
	std::vector<std::pair<std::string, uint64_t>> files;	// path, size
	uint64_t bytes = 0;
	unsigned max_files = kDefaultSpareFiles;
	uint64_t max_bytes = kDefaultSpareBytes;
	unsigned reserve = kDefaultSpareReserve;
	uint64_t want_bytes = 0;	// size class of the last epoch written (make_spares)
	std::mutex make_mu;		// one make_spares() at a time
};

void Store::note_epoch_size(uint64_t size_class) const
{
	std::lock_guard lk(spares_->mu);
	spares_->want_bytes = size_class;
}

Result<unsigned> Store::make_spares() const
{
	std::lock_guard mk(spares_->make_mu);
	std::vector<std::pair<std::string, uint64_t>> made;
	auto undo = [&] {
		for (const auto &m : made)
			::unlink(m.first.c_str());
	};
	for (;;) {
		uint64_t want = 0;
		{
			std::lock_guard lk(spares_->mu);
			want = spares_->want_bytes;
			unsigned fit = 0;
			for (const auto &f : spares_->files)
				fit += f.second >= want;
			uint64_t bytes = spares_->bytes;
			for (const auto &m : made)
				bytes += m.second;
			if (!want || fit + made.size() >= spares_->reserve ||
			    spares_->files.size() + made.size() >= spares_->max_files || bytes + want > spares_->max_bytes)
				break;
		}
		// A fresh name: a process-wide sequence, and past any name an
		// earlier Store of this directory (a reconnect, a restarted
		// slsvirtd whose pid came round again) left in the pool.
		std::string p;
		UniqueFd fd;
		for (int tries = 0; tries < 64; tries++) {
			static std::atomic<uint64_t> seq{0};
			p = epochs_dir_ + "/" + strf("spare-new-%d-%llu.sls.free", static_cast<int>(getpid()),
						     static_cast<unsigned long long>(++seq));
			fd.reset(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
			if (fd.valid() || errno != EEXIST)
				break;
		}
		if (!fd.valid()) {
			Error e = errno_error("create spare " + p);
			undo();
			return e;
		}
		made.push_back({p, want});
		int r = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(want));
		if (r != 0) {
			undo();
			return make_error(-r, "allocate %llu bytes for spare %s: %s", static_cast<unsigned long long>(want),
					  p.c_str(), strerror(r));
		}
	}
	if (made.empty())
		return 0u;
	if (Status s = fsync_dir(epochs_dir_); !s.ok()) {
		undo();
		return s.error();
	}
	std::lock_guard lk(spares_->mu);
	auto &f = spares_->files;
	for (const auto &m : made) {
		auto it = std::lower_bound(f.begin(), f.end(), m.second,
					   [](const std::pair<std::string, uint64_t> &a, uint64_t b) { return a.second < b; });
		f.insert(it, m);
		spares_->bytes += m.second;
	}
	return static_cast<unsigned>(made.size());
}

void Store::set_spare_limits(unsigned max_files, uint64_t max_bytes, unsigned reserve)
{
	std::vector<std::string> drop;
	{
		std::lock_guard lk(spares_->mu);
		spares_->max_files = max_files;
		spares_->max_bytes = max_bytes;
		spares_->reserve = reserve;
		auto &f = spares_->files;
		while (!f.empty() && (f.size() > max_files || spares_->bytes > max_bytes)) {
			spares_->bytes -= f.back().second;	// largest first
			drop.push_back(f.back().first);
			f.pop_back();
		}
	}
	for (const auto &p : drop)
		::unlink(p.c_str());
}

std::vector<std::pair<std::string, uint64_t>> Store::spare_files() const
{
	std::lock_guard lk(spares_->mu);
	return spares_->files;
}

std::optional<std::pair<std::string, uint64_t>> Store::take_spare(uint64_t bytes) const
{
	std::lock_guard lk(spares_->mu);
	auto &f = spares_->files;	// sorted by size
	auto it = std::lower_bound(f.begin(), f.end(), bytes,
				   [](const std::pair<std::string, uint64_t> &a, uint64_t b) { return a.second < b; });
	if (it == f.end())
		return std::nullopt;
	auto r = *it;
	f.erase(it);
	spares_->bytes -= r.second;
	return r;
}

void Store::drop_spares() const
{
	std::vector<std::pair<std::string, uint64_t>> f;
	{
		std::lock_guard lk(spares_->mu);
		f.swap(spares_->files);
		spares_->bytes = 0;
	}
	for (const auto &x : f)
		::unlink(x.first.c_str());
}

void Store::retire(const std::string &path, uint64_t epoch) const
{
	// Held across the check and the header zeroing (open_segments.hpp).
	std::lock_guard held_lk(open_segments::lock());
	struct stat st;
	if (::stat(path.c_str(), &st) < 0 || !S_ISREG(st.st_mode))
		return;
	const uint64_t size = static_cast<uint64_t>(st.st_size);
	// A lazily restored VM reads it: delete, never overwrite.
	bool keep = size >= 2 * fmt::kAlign && size % fmt::kAlign == 0 && !open_segments::held(st);
	if (keep) {
		std::lock_guard lk(spares_->mu);
		keep = spares_->files.size() < spares_->max_files && spares_->bytes + size <= spares_->max_bytes;
		if (keep)
			spares_->bytes += size;	// reserved; released below if this fails
	}
	auto release = [&] {
		std::lock_guard lk(spares_->mu);
		spares_->bytes -= size;
	};
	if (!keep) {
		if (::unlink(path.c_str()) < 0 && errno != ENOENT)
			SLS_LOG_WARN("remove %s: %s", path.c_str(), strerror(errno));
		return;
	}
	// Zero the file header: the file stops reading as its old epoch (which
	// a durable base or newer chains made unnecessary). Not synced: if a
	// power loss undoes it, the old epoch reappears, true and unneeded, and
	// is retired again.
	bool ok = false;
	{
		UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | (direct_io_ ? O_DIRECT : 0)));
		if (!fd.valid() && direct_io_ && errno == EINVAL)
			fd.reset(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
		void *z = std::aligned_alloc(fmt::kAlign, fmt::kAlign);
		if (fd.valid() && z) {
			memset(z, 0, fmt::kAlign);
			ok = ::pwrite(fd.get(), z, fmt::kAlign, 0) == static_cast<ssize_t>(fmt::kAlign);
		}
		std::free(z);
	}
	std::string to = path;
	if (ok && !is_spare_name(path.substr(path.rfind('/') + 1))) {
		ok = false;
		for (unsigned k = 0; k < 64 && !ok; k++) {
			std::string n = spare_file_name(epoch);
			if (k)
				n.insert(n.size() - 9, strf(".%u", k));
			to = epochs_dir_ + "/" + n;
			ok = ::renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0;
			if (!ok && errno != EEXIST)
				break;
		}
	}
	if (!ok) {
		release();
		if (::unlink(path.c_str()) < 0 && errno != ENOENT)
			SLS_LOG_WARN("remove %s: %s", path.c_str(), strerror(errno));
		return;
	}
	std::lock_guard lk(spares_->mu);
	auto &f = spares_->files;
	auto it = std::lower_bound(f.begin(), f.end(), size,
				   [](const std::pair<std::string, uint64_t> &a, uint64_t b) { return a.second < b; });
	f.insert(it, {to, size});
}

void Store::name_segment(const WriteStats &ws) const
{
	if (ws.written_path.empty() || ws.written_path == ws.path)
		return;
	if (::rename(ws.written_path.c_str(), ws.path.c_str()) < 0)
		SLS_LOG_WARN("rename %s to %s: %s (the segment is found by its header)", ws.written_path.c_str(),
			     ws.path.c_str(), strerror(errno));
}

Result<unsigned> Store::recover() const
{
	remove_stale_temp_files();
	auto names = segment_candidates(epochs_dir_);
	if (!names)
		return names.error();
	struct File {
		std::string name, path;
		SegmentInfo info;
	};
	std::vector<File> files;
	std::map<uint64_t, size_t> best;	// epoch -> index of its segment in files
	for (const auto &n : *names) {
		File f{n, epochs_dir_ + "/" + n, {}};
		f.info = scan_path(f.path, 0, vm_, ScanDepth::structure, nullptr);
		files.push_back(std::move(f));
		const File &x = files.back();
		if (!x.info.header_valid)
			continue;
		auto it = best.find(x.info.epoch);
		if (it == best.end() || better_copy(x.info, files[it->second].info, segment_path(x.info.epoch)))
			best[x.info.epoch] = files.size() - 1;
	}
	std::set<std::string> winners;
	for (const auto &[e, i] : best)
		if (files[i].info.status == SegmentStatus::valid)
			winners.insert(files[i].path);
	unsigned renamed = 0;
	for (const auto &[e, i] : best) {
		const File &f = files[i];
		const std::string to = segment_path(e);
		if (f.info.status != SegmentStatus::valid || f.path == to)
			continue;
		if (winners.count(to)) {
			SLS_LOG_WARN("%s holds epoch %llu but %s holds another valid segment: name left as is",
				     f.path.c_str(), static_cast<unsigned long long>(e), to.c_str());
			continue;
		}
		if (::rename(f.path.c_str(), to.c_str()) < 0) {
			SLS_LOG_WARN("rename %s to %s: %s", f.path.c_str(), to.c_str(), strerror(errno));
			continue;
		}
		SLS_LOG_INFO("%s holds epoch %llu: renamed to %s", f.path.c_str(), static_cast<unsigned long long>(e),
			     to.c_str());
		winners.erase(f.path);
		winners.insert(to);
		renamed++;
	}
	// The rest: valid copies that lost to a better one (a delta a durable
	// base of the same epoch replaced) and spare files become spares; torn
	// and corrupt files under an epoch's name stay for inspection.
	std::set<std::string> pooled;
	{
		std::lock_guard lk(spares_->mu);
		for (const auto &x : spares_->files)
			pooled.insert(x.first);
	}
	for (const auto &f : files) {
		if (winners.count(f.path) || pooled.count(f.path))
			continue;
		const bool lost = f.info.status == SegmentStatus::valid;	// not a winner: a duplicate
		if (!lost && !is_spare_name(f.name) && !f.info.blank_header)
			continue;
		struct stat st;
		if (::stat(f.path.c_str(), &st) < 0)
			continue;	// renamed above
		if (f.info.blank_header && is_spare_name(f.name)) {
			// Already a spare (the usual case): pooled as it is, no write.
			const uint64_t size = static_cast<uint64_t>(st.st_size);
			bool keep = size >= 2 * fmt::kAlign && size % fmt::kAlign == 0;
			{
				std::lock_guard lk(spares_->mu);
				keep = keep && spares_->files.size() < spares_->max_files &&
				       spares_->bytes + size <= spares_->max_bytes;
				if (keep) {
					auto &v = spares_->files;
					auto it = std::lower_bound(v.begin(), v.end(), size,
								   [](const std::pair<std::string, uint64_t> &a, uint64_t b) {
									   return a.second < b;
								   });
					v.insert(it, {f.path, size});
					spares_->bytes += size;
				}
			}
			if (!keep)
				::unlink(f.path.c_str());
			continue;
		}
		retire(f.path, f.info.header_valid ? f.info.epoch : epoch_of_name(f.name));
	}
	return renamed;
}

std::vector<EpochView> resolve_chains(const std::vector<SegmentInfo> &segments)
{
	std::vector<EpochView> out;
	std::map<uint64_t, size_t> at;	// epoch -> index in out
	for (const auto &seg : segments) {
		EpochView v;
		v.seg = seg;
		const auto ep = static_cast<unsigned long long>(seg.epoch);
		if (seg.status != SegmentStatus::valid) {
			v.why = strf("segment %s: %s", to_string(seg.status), seg.detail.c_str());
		} else if (seg.kind != SegmentKind::delta) {
			v.restorable = true;
			v.chain = {seg.epoch};
		} else {
			const auto pe = static_cast<unsigned long long>(seg.parent_epoch);
			auto it = at.find(seg.parent_epoch);
			if (seg.parent_epoch >= seg.epoch || it == at.end()) {
				v.why = strf("parent epoch %llu is missing", pe);
			} else {
				const EpochView &p = out[it->second];
				bool same_layout = p.seg.layout.size() == seg.layout.size();
				for (size_t i = 0; same_layout && i < seg.layout.size(); i++)
					same_layout = p.seg.layout[i].idstr == seg.layout[i].idstr &&
						      p.seg.layout[i].length == seg.layout[i].length;
				if (!p.restorable) {
					v.why = strf("parent epoch %llu is not restorable (%s)", pe, p.why.c_str());
				} else if (!same_layout) {
					v.why = strf("RAM layout differs from parent epoch %llu", pe);
				} else {
					v.restorable = true;
					v.chain = p.chain;
					v.chain.push_back(seg.epoch);
				}
			}
		}
		(void)ep;
		at[seg.epoch] = out.size();
		out.push_back(std::move(v));
	}
	return out;
}

RetentionPlan plan_retention(const std::vector<EpochView> &views, const RetentionPolicy &policy,
			     const std::set<uint64_t> &pinned)
{
	RetentionPlan plan;
	if (pinned.count(UINT64_MAX))
		return plan;	// a pin that does not verify: keep everything
	const unsigned retain = policy.retain ? policy.retain : 1;
	std::vector<const EpochView *> restorable;
	std::map<uint64_t, const EpochView *> by_epoch;
	for (const auto &v : views) {
		by_epoch[v.seg.epoch] = &v;
		if (v.restorable)
			restorable.push_back(&v);
	}
	if (restorable.size() <= retain)
		return plan;
	const size_t first_kept = restorable.size() - retain;
	const EpochView &oldest = *restorable[first_kept];
	const uint64_t o = oldest.seg.epoch;
	plan.oldest_retained = o;

	// Segments the retained epochs need, with `o` as it is, as a base, or
	// as a merged delta on its chain's root.
	enum class Fold { none, base, merge };
	auto needed = [&](Fold fold) {
		std::set<uint64_t> n;
		for (size_t i = first_kept; i < restorable.size(); i++) {
			const auto &ch = restorable[i]->chain;
			auto from = ch.begin();
			if (fold != Fold::none)
				if (auto f = std::find(ch.begin(), ch.end(), o); f != ch.end()) {
					from = f;
					if (fold == Fold::merge)
						n.insert(ch.front());
				}
			n.insert(from, ch.end());
		}
		// Epochs clones were started from, with their chains, as they are.
		for (uint64_t p : pinned)
			if (auto it = by_epoch.find(p); it != by_epoch.end()) {
				n.insert(p);
				n.insert(it->second->chain.begin(), it->second->chain.end());
			}
		return n;
	};
	auto seg_bytes = [](const SegmentInfo &s) { return s.segment_bytes ? s.segment_bytes : s.file_size; };
	auto removable = [&](const std::set<uint64_t> &need) {
		std::vector<uint64_t> r;
		for (const auto &v : views)
			if (v.seg.epoch < o && v.seg.status == SegmentStatus::valid && !need.count(v.seg.epoch))
				r.push_back(v.seg.epoch);
		std::reverse(r.begin(), r.end());	// newest first: leftovers of a crash stay restorable
		return r;
	};
	plan.remove = removable(needed(Fold::none));
	if (oldest.seg.kind == SegmentKind::delta) {
		std::vector<uint64_t> with_base = removable(needed(Fold::base));
		// Bytes of the deltas the base would fold (not the root itself).
		const uint64_t root = oldest.chain.front();
		uint64_t bytes = 0;
		for (uint64_t e : with_base)
			if (e != root)
				bytes += seg_bytes(by_epoch[e]->seg);
		const uint64_t root_bytes = seg_bytes(by_epoch[root]->seg);
		const size_t gain = with_base.size() - plan.remove.size();
		if (gain > 0 && with_base.size() >= std::max(1u, policy.compact_min) &&
		    bytes * 100 >= root_bytes * policy.compact_bytes_pct) {
			plan.compact_epoch = o;
			plan.remove = std::move(with_base);
		} else if (policy.merge && oldest.chain.size() > 2) {
			// Merge the deltas on the root into one. It writes at most
			// the bytes it folds; the last merged delta is folded again,
			// so it waits until at least as many new bytes arrived on it:
			// a merge then writes at most twice the new deltas' bytes.
			std::vector<uint64_t> with_merge = removable(needed(Fold::merge));
			uint64_t folded = 0, prev_merged = 0;
			for (size_t i = 1; i < oldest.chain.size(); i++)
				folded += seg_bytes(by_epoch[oldest.chain[i]]->seg);
			if (const SegmentInfo &first = by_epoch[oldest.chain[1]]->seg; first.merged)
				prev_merged = seg_bytes(first);
			if (with_merge.size() > plan.remove.size() &&
			    with_merge.size() >= std::max(1u, policy.compact_min) && folded >= 2 * prev_merged) {
				plan.compact_epoch = o;
				plan.merge = true;
				plan.remove = std::move(with_merge);
			}
		}
	}
	if (!plan.compact_epoch && plan.remove.empty())
		plan.oldest_retained = 0;	// nothing to do yet
	for (uint64_t e : plan.remove)
		plan.remove_paths.push_back(by_epoch[e]->seg.path);
	return plan;
}

Result<std::vector<EpochView>> Store::catalog(ScanDepth depth) const
{
	auto all = list(depth);
	if (!all)
		return all.error();
	std::vector<EpochView> views = resolve_chains(*all);
	// A rewinds file that does not verify is reported and ignored: every
	// epoch then counts as current, as before rewinds were recorded (a
	// restore without --epoch may pick a newer, abandoned timeline; an
	// explicit --epoch is unaffected).
	auto rw = load_rewinds(vm_dir_);
	if (!rw)
		SLS_LOG_WARN("VM %s: %s: ignoring the rewind records", vm_.c_str(), rw.message().c_str());
	else
		for (auto &v : views)
			if (const Rewind *r = abandoned_by(*rw, v.seg.epoch))
				v.rewound_to = r->to;
	return views;
}

std::string other_timeline_hint(const std::vector<EpochView> &views)
{
	size_t n = 0;
	uint64_t newest = 0;
	for (const auto &v : views)
		if (v.restorable && v.rewound_to) {
			n++;
			newest = v.seg.epoch;
		}
	if (!n)
		return "";
	return strf(" on its current timeline; %zu restorable epoch(s) on other timelines (newest %llu) can be "
		    "restored by number", n, static_cast<unsigned long long>(newest));
}

std::set<uint64_t> timeline_pins(const std::string &vm_dir, const std::vector<EpochView> &views)
{
	std::set<uint64_t> pins = pinned_epochs(vm_dir);
	auto rw = load_rewinds(vm_dir);
	if (!rw) {
		pins.insert(UINT64_MAX);	// never delete on doubt
		return pins;
	}
	if (rw->empty())
		return pins;
	// Until the restored VM has a durable epoch of its own, the epoch it was
	// restored to is the current timeline's newest: keep it and its chain.
	const Rewind &last = rw->back();
	bool own = std::any_of(views.begin(), views.end(),
			       [&](const EpochView &v) { return v.restorable && v.seg.epoch > last.newest; });
	if (!own)
		pins.insert(last.to);
	return pins;
}

Result<SegmentInfo> Store::newest_restorable(ScanDepth depth) const
{
	auto views = catalog(ScanDepth::structure);
	if (!views)
		return views.error();
	std::map<uint64_t, SegmentStatus> verified;	// full verify of each segment at most once
	std::map<uint64_t, std::string> why;
	std::map<uint64_t, std::string> path_of;
	for (const auto &v : *views)
		path_of[v.seg.epoch] = v.seg.path;
	for (auto it = views->rbegin(); it != views->rend(); ++it) {
		if (!it->restorable || it->rewound_to)
			continue;
		if (depth == ScanDepth::structure)
			return it->seg;
		bool ok = true;
		for (uint64_t e : it->chain) {
			if (!verified.count(e)) {
				SegmentInfo s = scan_path(path_of[e], e, vm_, ScanDepth::full, nullptr);
				verified[e] = s.status;
				why[e] = s.detail;
			}
			if (verified[e] != SegmentStatus::valid) {
				SLS_LOG_WARN("VM %s epoch %llu is not restorable: segment %llu fails verification: %s",
					     vm_.c_str(), static_cast<unsigned long long>(it->seg.epoch),
					     static_cast<unsigned long long>(e), why[e].c_str());
				ok = false;
				break;
			}
		}
		if (ok)
			return it->seg;
	}
	return make_error(-ENOENT, "VM '%s' has no restorable epoch in %s%s", vm_.c_str(), epochs_dir_.c_str(),
			  other_timeline_hint(*views).c_str());
}

Result<SegmentInfo> Store::newest_valid() const { return newest_restorable(ScanDepth::full); }

Result<LoadResult> Store::load_chain(const std::vector<uint64_t> &chain, const std::vector<std::string> &paths,
				     std::span<const RamBlockMem> dest, bool zero_dest, std::mutex *lock,
				     bool newest_first, bool deltas_only, std::vector<PageRef> *touched) const
{
	if (paths.size() != chain.size())
		return make_error(-EINVAL, "load_chain: %zu paths for %zu segments", paths.size(), chain.size());
	// Open every segment of the chain first (under `lock`, so a compaction
	// cannot delete a link in between); the open fds keep them readable.
	std::vector<UniqueFd> fds;
	{
		std::unique_lock<std::mutex> lk;
		if (lock)
			lk = std::unique_lock(*lock);
		for (size_t i = 0; i < chain.size(); i++) {
			const uint64_t e = chain[i];
			UniqueFd fd(::open(paths[i].c_str(), O_RDONLY | O_CLOEXEC));
			if (!fd.valid())
				return make_error(-EBADMSG, "epoch %llu: chain segment %llu: open %s: %s",
						  static_cast<unsigned long long>(chain.back()),
						  static_cast<unsigned long long>(e), paths[i].c_str(), strerror(errno));
			fds.push_back(std::move(fd));
		}
	}
	LoadResult res;
	const auto target = static_cast<unsigned long long>(chain.back());
	bool zeroed = !zero_dest;
	// newest_first: pages already taken from a newer segment, per dest block.
	std::vector<std::vector<bool>> applied;
	if (newest_first)
		for (const auto &d : dest)
			applied.emplace_back(d.length / fmt::kPageSize, false);
	for (size_t step = 0; step < chain.size(); step++) {
		const size_t ci = newest_first ? chain.size() - 1 - step : step;
		Parsed parsed;
		SegmentInfo info;
		info.path = paths[ci];
		scan_fd(fds[ci].get(), info, chain[ci], vm_, ScanDepth::structure, &parsed);
		const auto ep = static_cast<unsigned long long>(chain[ci]);
		if (info.status != SegmentStatus::valid)
			return make_error(-EBADMSG, "epoch %llu: chain segment %llu is %s: %s", target, ep,
					  to_string(info.status), info.detail.c_str());
		const bool want_root = ci == 0 && !deltas_only;
		if (want_root != (info.kind != SegmentKind::delta) || (ci > 0 && info.parent_epoch != chain[ci - 1]))
			return make_error(-EBADMSG, "epoch %llu: segment %llu (%s, parent %llu) does not fit its chain",
					  target, ep, to_string(info.kind),
					  static_cast<unsigned long long>(info.parent_epoch));
		// Layout must match exactly (as a set of idstr + length).
		std::vector<int> map(info.layout.size(), -1);
		if (info.layout.size() != dest.size())
			return make_error(-EINVAL, "epoch %llu has %zu RAM blocks, this VM has %zu", ep, info.layout.size(),
					  dest.size());
		for (size_t i = 0; i < info.layout.size(); i++) {
			const auto &lb = info.layout[i];
			for (size_t j = 0; j < dest.size(); j++)
				if (dest[j].idstr == lb.idstr)
					map[i] = static_cast<int>(j);
			if (map[i] < 0)
				return make_error(-EINVAL, "epoch %llu has RAM block '%s', which this VM lacks", ep,
						  lb.idstr.c_str());
			if (dest[static_cast<size_t>(map[i])].length != lb.length)
				return make_error(-EINVAL, "RAM block '%s': epoch %llu has %llu bytes, this VM %llu",
						  lb.idstr.c_str(), ep, static_cast<unsigned long long>(lb.length),
						  static_cast<unsigned long long>(dest[static_cast<size_t>(map[i])].length));
		}
		if (!zeroed) {
			for (const auto &d : dest)
				memset(d.base, 0, d.length);
			zeroed = true;
		}
		// Which entries to apply: all (oldest first), or those no newer
		// segment (nor a later entry of this one) has written.
		std::vector<std::vector<char>> take(parsed.pages.size());
		for (size_t r = parsed.pages.size(); r-- > 0;) {
			const auto &pr = parsed.pages[r];
			take[r].assign(pr.index.size(), 1);
			if (!newest_first)
				continue;
			for (size_t i = pr.index.size(); i-- > 0;) {
				const auto &e = pr.index[i];
				auto bit = applied[static_cast<size_t>(map[e.block_id])][e.offset / fmt::kPageSize];
				take[r][i] = !bit;
				bit = true;
			}
		}
		std::vector<struct iovec> iov;
		std::vector<size_t> iov_entry;	// index entry of each iovec
		std::vector<uint64_t> iov_slot;	// its data slot in the record
		for (size_t r = 0; r < parsed.pages.size(); r++) {
			const auto &pr = parsed.pages[r];
			iov.clear();
			iov_entry.clear();
			iov_slot.clear();
			uint64_t slot = 0;
			for (size_t i = 0; i < pr.index.size(); i++) {
				const auto &e = pr.index[i];
				unsigned char *at = dest[static_cast<size_t>(map[e.block_id])].base + e.offset;
				if (e.flags & fmt::kPageFZero) {
					if (take[r][i]) {
						memset(at, 0, fmt::kPageSize);
						res.zero_pages++;
					}
					continue;
				}
				if (take[r][i]) {
					iov.push_back({at, fmt::kPageSize});
					iov_entry.push_back(i);
					iov_slot.push_back(slot);
				}
				slot++;
			}
			// One preadv per run of consecutive data slots (IOV_MAX at most).
			for (size_t run = 0; run < iov.size();) {
				size_t end = run + 1;
				while (end < iov.size() && end - run < IOV_MAX && iov_slot[end] == iov_slot[end - 1] + 1)
					end++;
				const uint64_t pos = pr.data_pos + iov_slot[run] * fmt::kPageSize;
				size_t done = 0;	// pages of the run complete
				while (done < end - run) {
					int cnt = static_cast<int>(end - run - done);
					ssize_t n = ::preadv(fds[ci].get(), iov.data() + run + done, cnt,
							     static_cast<off_t>(pos + done * fmt::kPageSize));
					if (n < 0 && errno == EINTR)
						continue;
					if (n < 0)
						return errno_error("read pages of " + info.path);
					if (n == 0)
						return make_error(-EBADMSG, "epoch %llu: unexpected end of file in record %u", ep,
								  pr.recno);
					if (n % fmt::kPageSize) {
						// Partial page: finish that one page with pread, then go on.
						size_t page = done + static_cast<size_t>(n) / fmt::kPageSize;
						size_t got = static_cast<size_t>(n) % fmt::kPageSize;
						auto *base = static_cast<unsigned char *>(iov[run + page].iov_base);
						SLS_TRY(pread_full(fds[ci].get(), base + got, fmt::kPageSize - got,
								   static_cast<off_t>(pos + page * fmt::kPageSize + got),
								   "read page"));
						done = page + 1;
					} else {
						done += static_cast<size_t>(n) / fmt::kPageSize;
					}
				}
				run = end;
			}
			for (size_t k = 0; k < iov.size(); k++) {
				const auto &e = pr.index[iov_entry[k]];
				uint32_t c = crc32c(iov[k].iov_base, fmt::kPageSize);
				if (c != e.page_crc)
					return make_error(-EBADMSG,
							  "epoch %llu is corrupt: record %u at offset %llu: page %zu (block "
							  "'%s' offset 0x%llx) crc mismatch (stored 0x%08x, computed 0x%08x)",
							  ep, pr.recno, static_cast<unsigned long long>(pr.offset),
							  iov_entry[k], info.layout[e.block_id].idstr.c_str(),
							  static_cast<unsigned long long>(e.offset), e.page_crc, c);
			}
			res.pages_loaded += iov.size();
		}
		if (ci + 1 == chain.size()) {
			res.devstate = std::move(parsed.devstate);
			res.info = std::move(info);
			res.info.epoch = chain[ci];
		}
	}
	if (touched && newest_first) {
		touched->clear();
		for (uint32_t b = 0; b < applied.size(); b++)
			for (uint64_t pg = 0; pg < applied[b].size(); pg++)
				if (applied[b][pg])
					touched->push_back({b, pg * fmt::kPageSize});
	}
	res.chain = chain;
	return res;
}

// The catalog, read under the store lock when the caller shares one with
// the writer (slsvirtd's per-VM lock); a plain read otherwise.
static std::vector<std::string> chain_paths(const std::vector<EpochView> &views, const std::vector<uint64_t> &chain)
{
	std::map<uint64_t, const std::string *> at;
	for (const auto &v : views)
		at[v.seg.epoch] = &v.seg.path;
	std::vector<std::string> paths;
	for (uint64_t e : chain)
		paths.push_back(at.count(e) ? *at[e] : std::string());
	return paths;
}

static Result<std::vector<EpochView>> catalog_under(const Store &store, std::mutex *lock)
{
	std::unique_lock<std::mutex> lk;
	if (lock)
		lk = std::unique_lock(*lock);
	return store.catalog(ScanDepth::structure);
}

Result<LoadResult> Store::load(uint64_t epoch, std::span<const RamBlockMem> dest, bool zero_dest,
			       std::mutex *lock) const
{
	// The whole load under the store lock: compaction cannot retire (and a
	// writer cannot then reuse) a segment between the catalog and the read.
	// A reader without the lock (another process: slsctl, export) may see a
	// chain segment retired or reused under it: that fails its checks (the
	// header names another epoch, or page crcs), never loads wrong bytes;
	// the load is then retried on a fresh catalog if the chain's files moved.
	std::unique_lock<std::mutex> lk;
	if (lock)
		lk = std::unique_lock(*lock);
	auto c = catalog(ScanDepth::structure);
	if (!c)
		return c.error();
	std::vector<EpochView> views = std::move(*c);
	auto moved = [&](const std::vector<uint64_t> &chain, const std::vector<std::string> &paths) {
		auto fresh = catalog(ScanDepth::structure);
		if (!fresh)
			return false;
		bool changed = chain_paths(*fresh, chain) != paths;
		if (changed)
			views = std::move(*fresh);
		return changed;
	};
	for (int attempt = 0;; attempt++) {
		if (epoch != 0) {
			const EpochView *v = nullptr;
			for (const auto &x : views)
				if (x.seg.epoch == epoch)
					v = &x;
			if (!v)
				return make_error(-ENOENT, "epoch %llu does not exist for VM '%s'",
						  static_cast<unsigned long long>(epoch), vm_.c_str());
			if (!v->restorable)
				return make_error(-EBADMSG, "epoch %llu is not restorable: %s",
						  static_cast<unsigned long long>(epoch), v->why.c_str());
			const auto chain = v->chain;
			const auto paths = chain_paths(views, chain);
			auto r = load_chain(chain, paths, dest, zero_dest, nullptr);
			if (r.ok() || r.code() != -EBADMSG || attempt >= 3 || !moved(chain, paths))
				return r;
			continue;
		}
		bool retry = false;
		for (auto it = views.rbegin(); it != views.rend() && !retry; ++it) {
			if (!it->restorable || it->rewound_to)
				continue;
			const auto chain = it->chain;
			const auto paths = chain_paths(views, chain);
			auto r = load_chain(chain, paths, dest, zero_dest, nullptr);
			if (r.ok() || r.code() != -EBADMSG)
				return r;
			zero_dest = true;	// the failed attempt left pages behind
			if (attempt < 3 && moved(chain, paths)) {
				retry = true;	// views is the fresh catalog now
				break;
			}
			SLS_LOG_WARN("VM %s: %s; trying an older epoch", vm_.c_str(), r.message().c_str());
		}
		if (!retry)
			return make_error(-ENOENT, "VM '%s' has no valid epoch to restore%s", vm_.c_str(),
					  other_timeline_hint(views).c_str());
	}
}

namespace {
// An anonymous, lazily populated image of a VM's RAM (compaction).
class Image {
public:
	~Image()
	{
		if (base_ != MAP_FAILED)
			munmap(base_, len_);
	}
	Status map(size_t len)
	{
		len_ = len;
		base_ = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (base_ == MAP_FAILED)
			return errno_error(strf("map a %zu-byte RAM image", len));
		return {};
	}
	unsigned char *data() const { return static_cast<unsigned char *>(base_); }

private:
	void *base_ = MAP_FAILED;
	size_t len_ = 0;
};

uint64_t mono_ns()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
} // namespace

Result<CompactStats> Store::compact(const RetentionPlan &plan, const FaultPlan &faults, std::mutex *lock,
				    const std::function<void(CompactStage)> &at_stage) const
{
	CompactStats cs;
	const uint64_t t0 = mono_ns();
	auto stage = [&](CompactStage st, FaultKind k, const char *name, uint64_t e) {
		if (at_stage)
			at_stage(st);
		if (faults.hits(k, e))
			FaultPlan::crash(name, e);
	};
	const uint64_t e = plan.compact_epoch;
	if (e) {
		auto c = catalog_under(*this, lock);
		if (!c)
			return c.error();
		std::vector<EpochView> views = std::move(*c);
		const EpochView *v = nullptr;
		for (const auto &x : views)
			if (x.seg.epoch == e)
				v = &x;
		if (!v || !v->restorable)
			return make_error(-ENOENT, "compaction: epoch %llu is not restorable: %s",
					  static_cast<unsigned long long>(e), v ? v->why.c_str() : "no such segment");
		// A merge folds the deltas above the root (which stays) into one.
		std::vector<uint64_t> fold = v->chain;
		const uint64_t root = fold.front();
		if (plan.merge) {
			if (fold.size() < 3)
				return make_error(-EINVAL, "compaction: epoch %llu has no deltas to merge on its root",
						  static_cast<unsigned long long>(e));
			fold.erase(fold.begin());
		}
		cs.epoch = e;
		cs.merged = plan.merge;
		cs.chain_len = fold.size();
		uint64_t total = 0;
		for (const auto &b : v->seg.layout)
			total += b.length;
		Image img;
		SLS_TRY(img.map(total));
		std::vector<RamBlockMem> blocks;
		uint64_t at = 0;
		for (const auto &b : v->seg.layout) {
			blocks.push_back({b.idstr, b.length, img.data() + at});
			at += b.length;
		}
		const uint64_t t1 = mono_ns();
		std::vector<PageRef> touched;
		auto lr = load_chain(fold, chain_paths(views, fold), blocks, false, lock, true, plan.merge, &touched);
		if (!lr)
			return make_error(lr.code(), "compaction of epoch %llu: %s", static_cast<unsigned long long>(e),
					  lr.message().c_str());
		cs.load_ns = mono_ns() - t1;
		if (at_stage)
			at_stage(CompactStage::writing_tmp);
		SegmentSpec spec;
		spec.path = temp_path(e);
		spec.fsync_dir_if_new = false;	// the rename's directory fsync covers the name
		if (plan.merge) {
			spec.meta = {e, root, 0, v->seg.capture_realtime_ns, v->seg.stop_ns};
			spec.header_flags = fmt::kSegFMerged;
			spec.delta = true;	// every page the deltas set; a now-zero one stays a ZERO entry
			spec.pages = touched;
		} else {
			spec.meta = {e, v->seg.parent_epoch, 1 /* SLS_EPOCH_F_FULL */, v->seg.capture_realtime_ns,
				     v->seg.stop_ns};
			spec.header_flags = fmt::kSegFBase;
		}
		spec.blocks = blocks;
		spec.devstate = lr->devstate;
		spec.crash_mid = FaultKind::crash_compaction_writing;
		spec.epoch_faults = false;
		const uint64_t t2 = mono_ns();
		auto wr = write_segment(spec, faults, nullptr);
		if (!wr)
			return make_error(wr.code(), "compaction of epoch %llu: %s", static_cast<unsigned long long>(e),
					  wr.message().c_str());
		cs.write_ns = mono_ns() - t2;
		cs.base_bytes = wr->file_bytes;
		cs.pages = wr->nr_pages;
		stage(CompactStage::tmp_durable, FaultKind::crash_compaction_tmp, "crash-compaction-tmp", e);
		std::unique_lock<std::mutex> lk;
		if (lock)
			lk = std::unique_lock(*lock);
		if (::rename(spec.path.c_str(), segment_path(e).c_str()) < 0) {
			Error err = errno_error("rename " + spec.path);
			::unlink(spec.path.c_str());
			return err;
		}
		SLS_TRY(fsync_dir(epochs_dir_));
		// The delta the base replaces, if a power loss had left it under
		// another name: the base is durable, so the delta is a spare now.
		if (v->seg.path != segment_path(e))
			retire(v->seg.path, e);
		stage(CompactStage::renamed, FaultKind::crash_compaction_renamed, "crash-compaction-renamed", e);
	}
	// Deletes, newest first, each only after the base (if any) is durable.
	{
		std::unique_lock<std::mutex> lk;
		if (lock)
			lk = std::unique_lock(*lock);
		// Each removed segment is retired: kept as a spare the writer will
		// overwrite in place (its header zeroed first), or deleted when the
		// pool is full. Nothing here needs to be durable: a retired segment
		// that reappears after a power loss is an old, unneeded epoch.
		const size_t half = plan.remove.size() / 2;
		for (size_t i = 0; i < plan.remove.size(); i++) {
			if (i == half && e)
				stage(CompactStage::mid_delete, FaultKind::crash_mid_compaction, "crash-mid-compaction", e);
			std::string p = i < plan.remove_paths.size() ? plan.remove_paths[i] : segment_path(plan.remove[i]);
			retire(p, plan.remove[i]);
			cs.removed++;
		}
	}
	cs.total_ns = mono_ns() - t0;
	return cs;
}

Result<CompactStats> Store::apply_retention(const RetentionPolicy &policy, const FaultPlan &faults) const
{
	auto views = catalog(ScanDepth::structure);
	if (!views)
		return views.error();
	RetentionPlan plan = plan_retention(*views, policy, timeline_pins(vm_dir_, *views));
	if (!plan.oldest_retained)
		return CompactStats{};
	return compact(plan, faults);
}

// Lazy restore: the chain's files are opened (and held) first, then each is
// scanned at structure depth through its fd, so what is mapped is exactly
// what the fds will read. Newest segment first; a page is taken from the
// newest segment (and, within one, the last entry) that lists it.
Result<LazyMap> Store::map_epoch(uint64_t epoch, std::span<const RamBlockDesc> dest, uint64_t holder,
				 std::mutex *lock) const
{
	for (int attempt = 0;; attempt++) {
		auto c = catalog_under(*this, lock);
		if (!c)
			return c.error();
		const EpochView *v = nullptr;
		for (auto it = c->rbegin(); it != c->rend() && !v; ++it)
			if (epoch ? it->seg.epoch == epoch : it->restorable && !it->rewound_to)
				v = &*it;
		if (!v && epoch)
			return make_error(-ENOENT, "epoch %llu does not exist for VM '%s'",
					  static_cast<unsigned long long>(epoch), vm_.c_str());
		if (!v)
			return make_error(-ENOENT, "VM '%s' has no restorable epoch%s", vm_.c_str(),
					  other_timeline_hint(*c).c_str());
		if (!v->restorable)
			return make_error(-EBADMSG, "epoch %llu is not restorable: %s",
					  static_cast<unsigned long long>(v->seg.epoch), v->why.c_str());
		LazyMap m;
		m.chain = v->chain;
		const auto paths = chain_paths(*c, m.chain);
		if (m.chain.size() > SLS_LAZY_MAX_FILES)
			return make_error(-E2BIG, "epoch %llu: its chain has %zu segments, a lazy restore serves at most %u "
					  "(restore eagerly, or let compaction fold the chain)",
					  static_cast<unsigned long long>(v->seg.epoch), m.chain.size(), SLS_LAZY_MAX_FILES);
		{
			std::unique_lock<std::mutex> lk;
			if (lock)
				lk = std::unique_lock(*lock);
			std::lock_guard held_lk(open_segments::lock());
			for (size_t i = 0; i < paths.size(); i++) {
				UniqueFd fd(::open(paths[i].c_str(), O_RDONLY | O_CLOEXEC));
				struct stat st;
				if (!fd.valid() || fstat(fd.get(), &st) < 0)
					return errno_error(strf("epoch %llu: open chain segment %llu (%s)",
								static_cast<unsigned long long>(v->seg.epoch),
								static_cast<unsigned long long>(m.chain[i]), paths[i].c_str()));
				if (holder)
					open_segments::hold(holder, st);
				m.files.push_back(std::move(fd));
			}
		}
		std::vector<std::vector<bool>> seen;
		for (const auto &d : dest)
			seen.emplace_back(d.length / fmt::kPageSize, false);
		Status bad;
		for (size_t step = 0; step < m.chain.size() && bad.ok(); step++) {
			const size_t ci = m.chain.size() - 1 - step;
			const auto ep = static_cast<unsigned long long>(m.chain[ci]);
			Parsed parsed;
			SegmentInfo info;
			info.path = paths[ci];
			scan_fd(m.files[ci].get(), info, m.chain[ci], vm_, ScanDepth::structure, &parsed);
			if (info.status != SegmentStatus::valid) {
				bad = make_error(-EBADMSG, "epoch %llu: chain segment %llu is %s: %s",
						 static_cast<unsigned long long>(m.chain.back()), ep, to_string(info.status),
						 info.detail.c_str());
				break;
			}
			if ((ci == 0) != (info.kind != SegmentKind::delta) || (ci > 0 && info.parent_epoch != m.chain[ci - 1])) {
				bad = make_error(-EBADMSG, "epoch %llu: segment %llu does not fit its chain",
						 static_cast<unsigned long long>(m.chain.back()), ep);
				break;
			}
			std::vector<int> map(info.layout.size(), -1);
			if (info.layout.size() != dest.size())
				return make_error(-EINVAL, "epoch %llu has %zu RAM blocks, this VM has %zu", ep,
						  info.layout.size(), dest.size());
			for (size_t i = 0; i < info.layout.size(); i++) {
				for (size_t j = 0; j < dest.size(); j++)
					if (dest[j].idstr == info.layout[i].idstr && dest[j].length == info.layout[i].length)
						map[i] = static_cast<int>(j);
				if (map[i] < 0)
					return make_error(-EINVAL, "epoch %llu: RAM block '%s' (%llu bytes) is not in this VM",
							  ep, info.layout[i].idstr.c_str(),
							  static_cast<unsigned long long>(info.layout[i].length));
			}
			for (size_t r = parsed.pages.size(); r-- > 0;) {
				const auto &pr = parsed.pages[r];
				uint64_t ndata = 0;
				for (const auto &e : pr.index)
					ndata += !(e.flags & fmt::kPageFZero);
				uint64_t slot = ndata;
				for (size_t i = pr.index.size(); i-- > 0;) {
					const auto &e = pr.index[i];
					const bool zero = e.flags & fmt::kPageFZero;
					slot -= !zero;
					auto bit = seen[static_cast<size_t>(map[e.block_id])][e.offset / fmt::kPageSize];
					if (bit)
						continue;
					bit = true;
					if (!zero)
						m.pages.push_back({static_cast<uint32_t>(map[e.block_id]), static_cast<uint32_t>(ci),
								   e.offset, pr.data_pos + slot * fmt::kPageSize, e.page_crc});
				}
			}
			if (ci + 1 == m.chain.size()) {
				m.devstate = std::move(parsed.devstate);
				m.info = std::move(info);
				m.info.epoch = m.chain[ci];
			}
		}
		if (!bad.ok()) {
			if (holder)
				open_segments::release(holder);
			if (attempt < 3)
				continue;	// a segment moved under the catalog: look again
			return bad.error();
		}
		std::sort(m.pages.begin(), m.pages.end(), [](const LazyPage &a, const LazyPage &b) {
			return a.block != b.block ? a.block < b.block : a.offset < b.offset;
		});
		return m;
	}
}

} // namespace slsvirt
