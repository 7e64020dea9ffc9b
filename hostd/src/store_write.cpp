// Segment writer: io_uring data writes, fdatasync, then the COMMIT record.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <optional>

#include "slsvirt/crc32c.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/log.hpp"
#include "slsvirt/store.hpp"
#include "slsvirt/store_format.hpp"
#include "slsvirt/uring.hpp"

namespace slsvirt {
namespace {

uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool page_is_zero(const unsigned char *p)
{
	uint64_t acc = 0;
	for (size_t i = 0; i < fmt::kPageSize; i += 64) {
		uint64_t w[8];
		memcpy(w, p + i, 64);
		acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
		if (acc)
			return false;
	}
	return true;
}

fmt::RecordHeader make_record_header(uint16_t type, uint64_t epoch, uint64_t payload_len, uint32_t count,
				     uint32_t payload_crc)
{
	fmt::RecordHeader h{};
	h.magic = fmt::kRecordMagic;
	h.type = type;
	h.epoch = epoch;
	h.payload_length = payload_len;
	h.count = count;
	h.payload_crc = payload_crc;
	h.header_crc = crc32c(&h, offsetof(fmt::RecordHeader, header_crc));
	return h;
}

struct PageRef {
	uint32_t block;
	uint64_t offset;
};

// A zero-initialised buffer owned until the writer drains.
class Buffers {
public:
	unsigned char *alloc(size_t n)
	{
		bufs_.push_back(std::make_unique<unsigned char[]>(n));
		return bufs_.back().get();
	}

private:
	std::vector<std::unique_ptr<unsigned char[]>> bufs_;
};

Status validate_blocks(std::span<const RamBlockMem> blocks)
{
	if (blocks.empty() || blocks.size() > fmt::kMaxBlocks)
		return make_error(-EINVAL, "%zu RAM blocks (allowed 1..%u)", blocks.size(), fmt::kMaxBlocks);
	for (size_t i = 0; i < blocks.size(); i++) {
		const auto &b = blocks[i];
		if (b.idstr.empty() || b.idstr.size() >= fmt::kIdstrLen || b.idstr.find('\0') != std::string::npos)
			return make_error(-EINVAL, "RAM block %zu: bad idstr", i);
		if (b.length == 0 || b.length % fmt::kPageSize || !b.base)
			return make_error(-EINVAL, "RAM block '%s': length %llu not a positive page multiple",
					  b.idstr.c_str(), static_cast<unsigned long long>(b.length));
		for (size_t j = 0; j < i; j++)
			if (blocks[j].idstr == b.idstr)
				return make_error(-EINVAL, "RAM block '%s' listed twice", b.idstr.c_str());
	}
	return {};
}

} // namespace

Result<WriteStats> Store::write_epoch(const EpochMeta &meta, std::span<const RamBlockMem> blocks,
				      std::span<const unsigned char> devstate, const FaultPlan &faults,
				      Uring *ring) const
{
	const uint64_t t0 = now_ns(CLOCK_MONOTONIC);
	if (meta.epoch == 0)
		return make_error(-EINVAL, "epoch 0 is reserved (means 'none')");
	SLS_TRY(validate_blocks(blocks));
	if (devstate.size() > fmt::kMaxDevstate)
		return make_error(-EFBIG, "device state of %zu bytes exceeds the %llu allowed", devstate.size(),
				  static_cast<unsigned long long>(fmt::kMaxDevstate));

	// 1. Find the non-zero pages (page-granular scan of the source memory).
	WriteStats stats;
	std::vector<PageRef> pages;
	for (uint32_t b = 0; b < blocks.size(); b++) {
		for (uint64_t off = 0; off < blocks[b].length; off += fmt::kPageSize) {
			if (page_is_zero(blocks[b].base + off))
				stats.zero_pages++;
			else
				pages.push_back({b, off});
		}
	}

	// 2. Create the segment (O_TRUNC: a torn/corrupt segment of the same
	// epoch number is overwritten; callers never reuse a valid epoch).
	const std::string path = segment_path(meta.epoch);
	struct stat st;
	const bool existed = ::stat(path.c_str(), &st) == 0;
	UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
	if (!fd.valid())
		return errno_error("create " + path);

	std::optional<Uring> own_ring;
	if (!ring) {
		auto r = Uring::create(256);
		if (!r) {
			fd.reset();
			::unlink(path.c_str());
			return r.error();
		}
		own_ring.emplace(std::move(*r));
		ring = &*own_ring;
	}
	Buffers bufs;	// declared before the writer: outlives every queued write
	UringFileWriter w(*ring, fd.get(), segment_file_name(meta.epoch));
	if (faults.hits(FaultKind::fail_write, meta.epoch))
		w.inject_error(-EIO);

	auto fail = [&](Status s) -> Result<WriteStats> {
		w.drain().ignore();	// nothing may still write from our buffers
		fd.reset();
		if (::unlink(path.c_str()) < 0)
			SLS_LOG_WARN("could not remove failed segment %s: %s", path.c_str(), strerror(errno));
		s.context(strf("epoch %llu", static_cast<unsigned long long>(meta.epoch)));
		return s.error();
	};
	uint64_t cursor = 0;
	uint64_t nr_records = 0;

	// File header.
	{
		unsigned char *buf = bufs.alloc(fmt::kAlign);
		fmt::FileHeader fh{};
		memcpy(fh.magic, fmt::kFileMagic, sizeof(fh.magic));
		fh.format_version = fmt::kFormatVersion;
		fh.header_size = sizeof(fh);
		fh.page_size = fmt::kPageSize;
		fh.epoch = meta.epoch;
		fh.parent_epoch = meta.parent_epoch;
		snprintf(fh.vm_name, sizeof(fh.vm_name), "%s", vm_.c_str());
		fh.created_realtime_ns = now_ns(CLOCK_REALTIME);
		fh.header_crc = crc32c(&fh, offsetof(fmt::FileHeader, header_crc));
		memcpy(buf, &fh, sizeof(fh));
		Status s = w.write(buf, fmt::kAlign, 0, 0);
		if (!s.ok())
			return fail(s);
		cursor = fmt::kAlign;
	}
	// RAM_LAYOUT.
	{
		uint64_t plen = blocks.size() * sizeof(fmt::LayoutBlock);
		uint64_t span = fmt::record_span(plen);
		unsigned char *buf = bufs.alloc(span);
		auto *lb = reinterpret_cast<fmt::LayoutBlock *>(buf + sizeof(fmt::RecordHeader));
		for (size_t i = 0; i < blocks.size(); i++) {
			fmt::LayoutBlock x{};
			memcpy(x.idstr, blocks[i].idstr.data(), blocks[i].idstr.size());
			x.length = blocks[i].length;
			memcpy(&lb[i], &x, sizeof(x));
		}
		auto h = make_record_header(fmt::kRecRamLayout, meta.epoch, plen, static_cast<uint32_t>(blocks.size()),
					    crc32c(lb, plen));
		memcpy(buf, &h, sizeof(h));
		Status s = w.write(buf, span, cursor, static_cast<uint32_t>(++nr_records));
		if (!s.ok())
			return fail(s);
		cursor += span;
	}
	// PAGES records: index then page data straight from the source memory,
	// contiguous pages coalesced into one write.
	const size_t nr_page_records = (pages.size() + fmt::kMaxPagesPerRecord - 1) / fmt::kMaxPagesPerRecord;
	const size_t crash_after = nr_page_records / 2 ? nr_page_records / 2 : 1;
	for (size_t r = 0; r < nr_page_records; r++) {
		size_t first = r * fmt::kMaxPagesPerRecord;
		size_t n = std::min<size_t>(fmt::kMaxPagesPerRecord, pages.size() - first);
		uint64_t data_off = fmt::pages_data_offset(n);
		unsigned char *buf = bufs.alloc(sizeof(fmt::RecordHeader) + data_off);
		auto *idx = reinterpret_cast<fmt::PageIndexEntry *>(buf + sizeof(fmt::RecordHeader));
		for (size_t i = 0; i < n; i++) {
			const PageRef &p = pages[first + i];
			fmt::PageIndexEntry e{p.block, crc32c(blocks[p.block].base + p.offset, fmt::kPageSize), p.offset};
			memcpy(&idx[i], &e, sizeof(e));
		}
		uint64_t plen = fmt::pages_payload_length(n);
		auto h = make_record_header(fmt::kRecPages, meta.epoch, plen, static_cast<uint32_t>(n),
					    crc32c(idx, n * sizeof(fmt::PageIndexEntry)));
		memcpy(buf, &h, sizeof(h));
		uint32_t recno = static_cast<uint32_t>(++nr_records);
		Status s = w.write(buf, sizeof(fmt::RecordHeader) + data_off, cursor, recno);
		uint64_t data_pos = cursor + sizeof(fmt::RecordHeader) + data_off;
		for (size_t i = 0; i < n && s.ok();) {
			const PageRef &p = pages[first + i];
			size_t run = 1;
			while (i + run < n && pages[first + i + run].block == p.block &&
			       pages[first + i + run].offset == p.offset + run * fmt::kPageSize)
				run++;
			s = w.write(blocks[p.block].base + p.offset, run * fmt::kPageSize,
				    data_pos + i * fmt::kPageSize, recno);
			i += run;
		}
		if (!s.ok())
			return fail(s);
		cursor += fmt::record_span(plen);
		stats.nr_pages += n;
		if (r + 1 == crash_after && faults.hits(FaultKind::crash_mid_data, meta.epoch)) {
			Status d = w.drain();
			(void)d.ok();
			FaultPlan::crash("crash-mid-data", meta.epoch);
		}
	}
	// DEVSTATE (always present, possibly empty).
	{
		unsigned char *buf = bufs.alloc(sizeof(fmt::RecordHeader));
		auto h = make_record_header(fmt::kRecDevstate, meta.epoch, devstate.size(), 0,
					    crc32c(devstate.data(), devstate.size()));
		memcpy(buf, &h, sizeof(h));
		uint32_t recno = static_cast<uint32_t>(++nr_records);
		Status s = w.write(buf, sizeof(h), cursor, recno);
		if (s.ok())
			s = w.write(devstate.data(), devstate.size(), cursor + sizeof(h), recno);
		if (!s.ok())
			return fail(s);
		cursor += fmt::record_span(devstate.size());
		stats.devstate_bytes = devstate.size();
	}

	// 3. Everything before COMMIT durable (and the new name, for a new file).
	Status s = w.fdatasync();
	if (!s.ok())
		return fail(s);
	if (!existed) {
		s = fsync_dir(epochs_dir_);
		if (!s.ok())
			return fail(s);
	}
	if (faults.hits(FaultKind::crash_before_commit, meta.epoch))
		FaultPlan::crash("crash-before-commit", meta.epoch);

	// 4. COMMIT, one whole 4096-byte block, then durable.
	{
		unsigned char *buf = bufs.alloc(fmt::kAlign);
		fmt::CommitPayload c{};
		c.epoch = meta.epoch;
		c.parent_epoch = meta.parent_epoch;
		c.epoch_flags = meta.flags;
		c.nr_records = nr_records;
		c.nr_pages = stats.nr_pages;
		c.page_bytes = stats.nr_pages * fmt::kPageSize;
		c.devstate_bytes = devstate.size();
		c.commit_offset = cursor;
		c.capture_realtime_ns = meta.capture_realtime_ns;
		c.stop_ns = meta.stop_ns;
		c.commit_realtime_ns = now_ns(CLOCK_REALTIME);
		auto h = make_record_header(fmt::kRecCommit, meta.epoch, sizeof(c), 0, crc32c(&c, sizeof(c)));
		memcpy(buf, &h, sizeof(h));
		memcpy(buf + sizeof(h), &c, sizeof(c));
		s = w.write(buf, fmt::kAlign, cursor, static_cast<uint32_t>(nr_records + 1));
		if (s.ok())
			s = w.fdatasync();
		if (!s.ok())
			return fail(s);
		cursor += fmt::kAlign;
	}
	stats.file_bytes = cursor;
	stats.bytes_written = w.bytes_written();
	stats.write_ns = now_ns(CLOCK_MONOTONIC) - t0;
	return stats;
}

} // namespace slsvirt
