// Segment scanner/verifier/loader and the Store's directory handling.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "slsvirt/crc32c.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/log.hpp"
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
void scan_fd(int fd, SegmentInfo &info, uint64_t expect_epoch, std::string_view expect_vm, ScanDepth depth,
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
		sc.torn(0, 0, "file header is zero-filled (never written)");
		return;
	}
	if (memcmp(fh.magic, fmt::kFileMagic, sizeof(fh.magic)) != 0) {
		sc.corrupt(0, 0, "bad file magic (not an slsvirt segment)");
		return;
	}
	if (fh.format_version != fmt::kFormatVersion) {
		sc.corrupt(0, 0, "unsupported format version %u (this build reads version %u)", fh.format_version,
			   fmt::kFormatVersion);
		return;
	}
	if (fh.header_size != sizeof(fh)) {
		sc.corrupt(0, 0, "file header size %u, expected %zu", fh.header_size, sizeof(fh));
		return;
	}
	uint32_t crc = crc32c(&fh, offsetof(fmt::FileHeader, header_crc));
	if (crc != fh.header_crc) {
		sc.corrupt(0, 0, "file header crc mismatch (stored 0x%08x, computed 0x%08x)", fh.header_crc, crc);
		return;
	}
	if (fh.page_size != fmt::kPageSize || fh.flags != 0 || fh.reserved2 != 0 ||
	    !all_zero(fh.reserved, sizeof(fh.reserved))) {
		sc.corrupt(0, 0, "file header: page size %u / flags 0x%x / reserved fields not as format 1 requires",
			   fh.page_size, fh.flags);
		return;
	}
	if (expect_epoch && fh.epoch != expect_epoch) {
		sc.corrupt(0, 0, "file header says epoch %llu but the file is named for epoch %llu",
			   static_cast<unsigned long long>(fh.epoch), static_cast<unsigned long long>(expect_epoch));
		return;
	}
	if (memchr(fh.vm_name, '\0', sizeof(fh.vm_name)) == nullptr ||
	    (!expect_vm.empty() && expect_vm != std::string_view(fh.vm_name))) {
		sc.corrupt(0, 0, "file header names another VM");
		return;
	}
	info.epoch = fh.epoch;
	info.parent_epoch = fh.parent_epoch;

	uint64_t off = fmt::kAlign;
	int recno = 0;
	uint64_t nr_pages = 0;
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
			sc.corrupt(recno, off, "record type %u (%s) is not allowed in format version 1", h.type, tn);
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
			if (h.count < 1 || h.count > fmt::kMaxPagesPerRecord ||
			    h.payload_length != fmt::pages_payload_length(h.count)) {
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
			for (uint32_t i = 0; i < h.count; i++) {
				const auto &e = pr.index[i];
				if (e.block_id >= info.layout.size() || e.offset % fmt::kPageSize ||
				    e.offset >= info.layout[e.block_id].length) {
					sc.corrupt(recno, off, "PAGES index entry %u: block %u offset %llu outside the layout",
						   i, e.block_id, static_cast<unsigned long long>(e.offset));
					return;
				}
			}
			if (depth == ScanDepth::full) {
				databuf.resize(static_cast<size_t>(h.count) * fmt::kPageSize);
				if (Status s = pread_full(fd, databuf.data(), databuf.size(),
							  static_cast<off_t>(pr.data_pos), "read page data");
				    !s.ok()) {
					sc.corrupt(recno, off, "%s", s.message().c_str());
					return;
				}
				for (uint32_t i = 0; i < h.count; i++) {
					uint32_t c = crc32c(databuf.data() + i * fmt::kPageSize, fmt::kPageSize);
					if (c != pr.index[i].page_crc) {
						const auto &e = pr.index[i];
						sc.corrupt(recno, off,
							   "page %u (block '%s' offset 0x%llx, file offset %llu) crc "
							   "mismatch (stored 0x%08x, computed 0x%08x)",
							   i, info.layout[e.block_id].idstr.c_str(),
							   static_cast<unsigned long long>(e.offset),
							   static_cast<unsigned long long>(pr.data_pos + i * fmt::kPageSize),
							   e.page_crc, c);
						return;
					}
				}
			}
			nr_pages += h.count;
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
			    c.page_bytes != nr_pages * fmt::kPageSize || c.commit_offset != off ||
			    c.devstate_bytes != info.devstate_bytes || !have_devstate ||
			    !all_zero(c.reserved, sizeof(c.reserved))) {
				sc.corrupt(recno, off,
					   "COMMIT does not match the records before it (commit says %llu records, "
					   "%llu pages; found %d records, %llu pages)",
					   static_cast<unsigned long long>(c.nr_records),
					   static_cast<unsigned long long>(c.nr_pages), recno - 1,
					   static_cast<unsigned long long>(nr_pages));
				return;
			}
			if (size < off + fmt::kAlign) {
				sc.torn(recno, off, "commit block truncated");
				return;
			}
			if (size > off + fmt::kAlign) {
				sc.corrupt(recno, off, "%llu trailing bytes after the commit record",
					   static_cast<unsigned long long>(size - off - fmt::kAlign));
				return;
			}
			info.epoch_flags = c.epoch_flags;
			info.nr_records = c.nr_records;
			info.nr_pages = c.nr_pages;
			info.page_bytes = c.page_bytes;
			info.capture_realtime_ns = c.capture_realtime_ns;
			info.stop_ns = c.stop_ns;
			info.commit_realtime_ns = c.commit_realtime_ns;
			info.status = SegmentStatus::valid;
			info.detail.clear();
			return;
		}
		off += fmt::record_span(h.payload_length);
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
	return scan_path(segment_path(epoch), epoch, vm_, depth, nullptr);
}

Result<std::vector<SegmentInfo>> Store::list(ScanDepth depth) const
{
	DIR *d = ::opendir(epochs_dir_.c_str());
	if (!d)
		return errno_error("open " + epochs_dir_);
	std::vector<uint64_t> epochs;
	while (struct dirent *de = ::readdir(d)) {
		std::string n = de->d_name;
		if (n.size() != 20 || n.compare(16, 4, ".sls") != 0)
			continue;
		uint64_t e = 0;
		bool ok = true;
		for (int i = 0; i < 16; i++) {
			char c = n[static_cast<size_t>(i)];
			int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
			if (v < 0)
				ok = false;
			e = e << 4 | static_cast<uint64_t>(v < 0 ? 0 : v);
		}
		if (ok && e != 0)
			epochs.push_back(e);
	}
	::closedir(d);
	std::sort(epochs.begin(), epochs.end());
	std::vector<SegmentInfo> out;
	for (uint64_t e : epochs)
		out.push_back(scan(e, depth));
	return out;
}

Result<SegmentInfo> Store::newest_valid() const
{
	auto all = list(ScanDepth::structure);
	if (!all)
		return all.error();
	for (auto it = all->rbegin(); it != all->rend(); ++it) {
		if (it->status != SegmentStatus::valid)
			continue;
		SegmentInfo full = scan(it->epoch, ScanDepth::full);
		if (full.status == SegmentStatus::valid)
			return full;
		SLS_LOG_WARN("VM %s epoch %llu fails verification: %s", vm_.c_str(),
			     static_cast<unsigned long long>(it->epoch), full.detail.c_str());
	}
	return make_error(-ENOENT, "VM '%s' has no valid epoch in %s", vm_.c_str(), epochs_dir_.c_str());
}

Result<LoadResult> Store::load_one(const SegmentInfo &hint, std::span<const RamBlockMem> dest, bool zero_dest) const
{
	Parsed parsed;
	UniqueFd fd(::open(hint.path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.valid())
		return errno_error("open " + hint.path);
	LoadResult res;
	res.info.path = hint.path;
	scan_fd(fd.get(), res.info, hint.epoch, vm_, ScanDepth::structure, &parsed);
	const auto ep = static_cast<unsigned long long>(hint.epoch);
	if (res.info.status != SegmentStatus::valid)
		return make_error(-EBADMSG, "epoch %llu is %s: %s", ep, to_string(res.info.status),
				  res.info.detail.c_str());
	// Layout must match exactly (as a set of idstr + length).
	std::vector<int> map(res.info.layout.size(), -1);
	if (res.info.layout.size() != dest.size())
		return make_error(-EINVAL, "epoch %llu has %zu RAM blocks, this VM has %zu", ep,
				  res.info.layout.size(), dest.size());
	for (size_t i = 0; i < res.info.layout.size(); i++) {
		const auto &lb = res.info.layout[i];
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
	if (zero_dest)
		for (const auto &d : dest)
			memset(d.base, 0, d.length);
	std::vector<struct iovec> iov;
	for (const auto &pr : parsed.pages) {
		iov.clear();
		for (const auto &e : pr.index)
			iov.push_back({dest[static_cast<size_t>(map[e.block_id])].base + e.offset, fmt::kPageSize});
		size_t done = 0;	// pages complete
		while (done < iov.size()) {
			ssize_t n = ::preadv(fd.get(), iov.data() + done, static_cast<int>(iov.size() - done),
					     static_cast<off_t>(pr.data_pos + done * fmt::kPageSize));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return errno_error("read pages of " + hint.path);
			if (n == 0)
				return make_error(-EBADMSG, "epoch %llu: unexpected end of file in record %u", ep,
						  pr.recno);
			if (n % fmt::kPageSize) {
				// Partial page: finish that one page with pread, then go on.
				size_t page = done + static_cast<size_t>(n) / fmt::kPageSize;
				size_t got = static_cast<size_t>(n) % fmt::kPageSize;
				auto *base = static_cast<unsigned char *>(iov[page].iov_base);
				SLS_TRY(pread_full(fd.get(), base + got, fmt::kPageSize - got,
						   static_cast<off_t>(pr.data_pos + page * fmt::kPageSize + got),
						   "read page"));
				done = page + 1;
			} else {
				done += static_cast<size_t>(n) / fmt::kPageSize;
			}
		}
		for (size_t i = 0; i < pr.index.size(); i++) {
			uint32_t c = crc32c(iov[i].iov_base, fmt::kPageSize);
			if (c != pr.index[i].page_crc)
				return make_error(-EBADMSG,
						  "epoch %llu is corrupt: record %u at offset %llu: page %zu (block '%s' "
						  "offset 0x%llx) crc mismatch (stored 0x%08x, computed 0x%08x)",
						  ep, pr.recno, static_cast<unsigned long long>(pr.offset), i,
						  res.info.layout[pr.index[i].block_id].idstr.c_str(),
						  static_cast<unsigned long long>(pr.index[i].offset), pr.index[i].page_crc,
						  c);
		}
		res.pages_loaded += pr.index.size();
	}
	res.devstate = std::move(parsed.devstate);
	return res;
}

Result<LoadResult> Store::load(uint64_t epoch, std::span<const RamBlockMem> dest, bool zero_dest) const
{
	if (epoch != 0) {
		SegmentInfo hint;
		hint.epoch = epoch;
		hint.path = segment_path(epoch);
		return load_one(hint, dest, zero_dest);
	}
	auto all = list(ScanDepth::structure);
	if (!all)
		return all.error();
	std::string why;
	for (auto it = all->rbegin(); it != all->rend(); ++it) {
		if (it->status != SegmentStatus::valid)
			continue;
		auto r = load_one(*it, dest, zero_dest);
		if (r.ok() || r.code() != -EBADMSG)
			return r;
		SLS_LOG_WARN("VM %s: %s; trying an older epoch", vm_.c_str(), r.message().c_str());
		zero_dest = true;	// the failed attempt left pages behind
	}
	return make_error(-ENOENT, "VM '%s' has no valid epoch to restore", vm_.c_str());
}

Status Store::apply_retention(std::vector<uint64_t> &valid_epochs, unsigned retain) const
{
	if (retain == 0)
		retain = 1;
	std::sort(valid_epochs.begin(), valid_epochs.end());
	Status st;
	while (valid_epochs.size() > retain) {
		uint64_t e = valid_epochs.front();
		std::string p = segment_path(e);
		if (::unlink(p.c_str()) < 0 && errno != ENOENT && st.ok())
			st = errno_error("remove " + p);
		valid_epochs.erase(valid_epochs.begin());
	}
	return st;
}

} // namespace slsvirt
