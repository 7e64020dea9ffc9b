// Store: real io_uring writes into a temp dir, then every way to break a segment.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "slsvirt/branch.hpp"
#include "slsvirt/crc32c.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/open_segments.hpp"
#include "slsvirt/store.hpp"
#include "slsvirt/store_format.hpp"
#include "slsvirt/uring.hpp"
#include "test_util.hpp"

using namespace slsvirt;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kPage = 4096;

// Guest-like memory: two blocks, every third page of pc.ram zero.
struct Memory {
	std::vector<unsigned char> ram, bios;
	uint64_t nonzero_pages = 0;
	Memory(uint64_t ram_pages, uint64_t seed)
	    : ram(ram_pages * kPage), bios(16 * kPage)
	{
		for (uint64_t p = 0; p < ram_pages; p++) {
			if (p % 3 == 1)
				continue;
			test::fill_random(&ram[p * kPage], kPage, seed * 100000 + p);
			nonzero_pages++;
		}
		test::fill_random(bios.data(), 4 * kPage, seed + 7);	// bios: 4 pages, rest zero
		nonzero_pages += 4;
	}
	std::vector<RamBlockMem> blocks()
	{
		return {{"pc.ram", ram.size(), ram.data()}, {"pc.bios", bios.size(), bios.data()}};
	}
};

struct Rec {
	uint64_t offset;
	uint16_t type;
	uint64_t payload_length;
};

// Record offsets of a segment (trusted: the test wrote it).
std::vector<Rec> records_of(const std::string &path)
{
	auto b = test::read_file(path);
	std::vector<Rec> out;
	uint64_t off = fmt::kAlign;
	while (off + sizeof(fmt::RecordHeader) <= b.size()) {
		fmt::RecordHeader h;
		memcpy(&h, &b[off], sizeof(h));
		out.push_back({off, h.type, h.payload_length});
		if (h.type == fmt::kRecCommit || h.magic != fmt::kRecordMagic)
			break;	// the file may go on (size class padding, a recycled file's old bytes)
		off += fmt::record_span(h.payload_length);
	}
	return out;
}

// End of the segment (after the COMMIT block); the file may be longer.
uint64_t recs_end(const std::string &path) { return records_of(path).back().offset + fmt::kAlign; }

void rewrite_record_header(std::vector<unsigned char> &b, uint64_t off, void (*edit)(fmt::RecordHeader &))
{
	fmt::RecordHeader h;
	memcpy(&h, &b[off], sizeof(h));
	edit(h);
	h.header_crc = crc32c(&h, offsetof(fmt::RecordHeader, header_crc));
	memcpy(&b[off], &h, sizeof(h));
}

// Rewrites a segment (written by this build) as an older format version:
// file header version, and COMMIT's content_crc (version 3 on) cleared.
void downgrade_segment(const std::string &path, uint32_t version)
{
	auto b = test::read_file(path);
	fmt::FileHeader fh;
	memcpy(&fh, b.data(), sizeof(fh));
	fh.format_version = version;
	fh.header_crc = crc32c(&fh, offsetof(fmt::FileHeader, header_crc));
	memcpy(b.data(), &fh, sizeof(fh));
	const auto recs = records_of(path);
	uint64_t co = recs.back().offset;
	fmt::CommitPayload c;
	memcpy(&c, &b[co + sizeof(fmt::RecordHeader)], sizeof(c));
	c.content_crc = 0;
	if (version >= fmt::kFormatContentCrc) {	// recomputed over the new file header
		c.content_crc = crc32c(b.data(), offsetof(fmt::FileHeader, header_crc));
		for (size_t i = 0; i + 1 < recs.size(); i++)
			c.content_crc = crc32c(&b[recs[i].offset], offsetof(fmt::RecordHeader, header_crc), c.content_crc);
	}
	memcpy(&b[co + sizeof(fmt::RecordHeader)], &c, sizeof(c));
	fmt::RecordHeader rh;
	memcpy(&rh, &b[co], sizeof(rh));
	rh.payload_crc = crc32c(&c, sizeof(c));
	rh.header_crc = crc32c(&rh, offsetof(fmt::RecordHeader, header_crc));
	memcpy(&b[co], &rh, sizeof(rh));
	if (version < fmt::kFormatRecycled)
		b.resize(co + fmt::kAlign);	// older versions end at the COMMIT block
	test::write_file(path, b);
}

class StoreTest : public ::testing::Test {
protected:
	void SetUp() override
	{
		auto s = Store::open(dir.path(), "vm0", true);
		ASSERT_TRUE(s.ok()) << s.message();
		store.emplace(std::move(*s));
	}

	WriteStats write(uint64_t epoch, Memory &m, const std::vector<unsigned char> &dev,
			 const FaultPlan &faults = FaultPlan())
	{
		auto blocks = m.blocks();
		auto r = store->write_epoch({epoch, epoch - 1, 1, 1000 + epoch, 5000}, blocks, dev, faults);
		EXPECT_TRUE(r.ok()) << r.message();
		return r.ok() ? *r : WriteStats{};
	}

	// Loads into fresh buffers, which start out as garbage.
	Result<LoadResult> load(uint64_t epoch, Memory &out)
	{
		memset(out.ram.data(), 0xAB, out.ram.size());
		memset(out.bios.data(), 0xCD, out.bios.size());
		auto blocks = out.blocks();
		return store->load(epoch, blocks);
	}

	uint64_t newest()
	{
		auto n = store->newest_valid();
		return n.ok() ? n->epoch : 0;
	}

	test::TempDir dir;
	std::optional<Store> store;
	std::vector<unsigned char> dev = std::vector<unsigned char>(5000, 0x42);
};

} // namespace

TEST(StoreNames, VmNameRules)
{
	EXPECT_TRUE(check_vm_name("vm-1.test_A").ok());
	EXPECT_TRUE(check_vm_name(std::string(63, 'a')).ok());
	EXPECT_FALSE(check_vm_name(std::string(64, 'a')).ok());
	EXPECT_FALSE(check_vm_name("").ok());
	EXPECT_FALSE(check_vm_name(".x").ok());
	EXPECT_FALSE(check_vm_name("a/b").ok());
	EXPECT_FALSE(check_vm_name("..").ok());
	EXPECT_FALSE(check_vm_name("a b").ok());
	EXPECT_FALSE(Store::open("/tmp", "../etc", true).ok());
	EXPECT_EQ(segment_file_name(0x1f), "000000000000001f.sls");
}

TEST_F(StoreTest, RoundTripSkipsZeroPagesAndRestoresBytes)
{
	Memory m(2600, 1);	// > 1024 non-zero pages: several PAGES records
	WriteStats st = write(1, m, dev);
	EXPECT_EQ(st.nr_pages, m.nonzero_pages);
	EXPECT_EQ(st.zero_pages, m.ram.size() / kPage + m.bios.size() / kPage - m.nonzero_pages);
	EXPECT_EQ(st.devstate_bytes, dev.size());
	struct stat sb;
	ASSERT_EQ(stat(store->segment_path(1).c_str(), &sb), 0);
	// A new file is rounded up to its size class (zeros after COMMIT), so
	// that it can later be overwritten in place as a spare.
	EXPECT_EQ(static_cast<uint64_t>(sb.st_size), st.file_bytes + st.pad_bytes);
	EXPECT_LT(st.pad_bytes, st.file_bytes / 8);
	EXPECT_LT(st.file_bytes, m.ram.size() + m.bios.size());	// zero pages not stored
	EXPECT_GE(st.bytes_written, st.nr_pages * kPage + dev.size());

	SegmentInfo si = store->scan(1, ScanDepth::full);
	ASSERT_EQ(si.status, SegmentStatus::valid) << si.detail;
	EXPECT_EQ(si.nr_pages, m.nonzero_pages);
	EXPECT_EQ(si.parent_epoch, 0u);
	EXPECT_EQ(si.capture_realtime_ns, 1001u);
	EXPECT_EQ(si.stop_ns, 5000u);
	ASSERT_EQ(si.layout.size(), 2u);
	EXPECT_EQ(si.layout[0].idstr, "pc.ram");

	Memory out(2600, 99);
	auto lr = load(1, out);
	ASSERT_TRUE(lr.ok()) << lr.message();
	EXPECT_EQ(lr->pages_loaded, m.nonzero_pages);
	EXPECT_TRUE(out.ram == m.ram);	// bytes read == bytes written, zero pages zero
	EXPECT_TRUE(out.bios == m.bios);
	EXPECT_EQ(lr->devstate, dev);
	EXPECT_EQ(newest(), 1u);
}

TEST_F(StoreTest, EmptyDevstateAndAllZeroMemory)
{
	Memory m(8, 1);
	std::fill(m.ram.begin(), m.ram.end(), 0);
	std::fill(m.bios.begin(), m.bios.end(), 0);
	WriteStats st = write(1, m, {});
	EXPECT_EQ(st.nr_pages, 0u);
	Memory out(8, 2);
	auto lr = load(0, out);
	ASSERT_TRUE(lr.ok()) << lr.message();
	EXPECT_TRUE(out.ram == m.ram);
	EXPECT_TRUE(lr->devstate.empty());
}

TEST_F(StoreTest, LoadRejectsLayoutMismatch)
{
	Memory m(16, 1);
	write(1, m, dev);
	Memory other(17, 1);
	auto lr = load(1, other);
	ASSERT_FALSE(lr.ok());
	EXPECT_NE(lr.message().find("pc.ram"), std::string::npos) << lr.message();
	std::vector<RamBlockMem> renamed = m.blocks();
	renamed[1].idstr = "pc.rom";
	EXPECT_FALSE(store->load(1, renamed).ok());
	renamed.pop_back();
	EXPECT_FALSE(store->load(1, renamed).ok());
}

TEST_F(StoreTest, BadFileMagicVersionAndHeaderCrc)
{
	Memory m(16, 1);
	write(1, m, dev);
	write(2, m, dev);
	const std::string p = store->segment_path(2);
	const auto orig = test::read_file(p);

	auto b = orig;
	b[0] = 'X';
	test::write_file(p, b);
	SegmentInfo si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("magic"), std::string::npos) << si.detail;
	EXPECT_EQ(newest(), 1u);

	b = orig;
	fmt::FileHeader fh;
	memcpy(&fh, b.data(), sizeof(fh));
	fh.format_version = fmt::kFormatVersion + 1;
	fh.header_crc = crc32c(&fh, offsetof(fmt::FileHeader, header_crc));
	memcpy(b.data(), &fh, sizeof(fh));
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("version " + std::to_string(fmt::kFormatVersion + 1)), std::string::npos) << si.detail;

	b = orig;
	b[offsetof(fmt::FileHeader, vm_name) + 1] ^= 1;
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("crc"), std::string::npos) << si.detail;
	EXPECT_EQ(newest(), 1u);
	Memory out(16, 5);
	auto lr = load(0, out);
	ASSERT_TRUE(lr.ok());
	EXPECT_EQ(lr->info.epoch, 1u);
}

TEST_F(StoreTest, BadRecordHeaderIndexAndPageCrc)
{
	Memory m(40, 1);
	write(1, m, dev);
	Memory m2(40, 2);
	write(2, m2, dev);
	const std::string p = store->segment_path(2);
	const auto orig = test::read_file(p);
	auto recs = records_of(p);
	ASSERT_GE(recs.size(), 4u);
	ASSERT_EQ(recs[1].type, fmt::kRecPages);
	const uint64_t pages_off = recs[1].offset;

	// Record header crc.
	auto b = orig;
	b[pages_off + offsetof(fmt::RecordHeader, epoch)] ^= 0x80;
	test::write_file(p, b);
	SegmentInfo si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_EQ(si.bad_record, 2);
	EXPECT_EQ(si.bad_offset, pages_off);
	EXPECT_NE(si.detail.find("header crc"), std::string::npos) << si.detail;

	// Index crc (record crc covers header + index).
	b = orig;
	b[pages_off + sizeof(fmt::RecordHeader) + 5] ^= 1;
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("payload crc"), std::string::npos) << si.detail;
	EXPECT_EQ(newest(), 1u);

	// One page's crc: only a full verify or a load sees it.
	b = orig;
	fmt::RecordHeader h;
	memcpy(&h, &b[pages_off], sizeof(h));
	const uint64_t first_page = pages_off + sizeof(h) + fmt::pages_data_offset(h.count);
	EXPECT_EQ(first_page % 4096, 0u);	// page data is mmap-able
	b[first_page + 3 * kPage + 17] ^= 0xff;
	test::write_file(p, b);
	EXPECT_EQ(store->scan(2, ScanDepth::structure).status, SegmentStatus::valid);
	si = store->scan(2, ScanDepth::full);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("page 3"), std::string::npos) << si.detail;
	EXPECT_EQ(newest(), 1u);	// newest_valid skips the corrupt newest epoch
	Memory out(40, 9);
	EXPECT_FALSE(load(2, out).ok());
	auto lr = load(0, out);	// newest that verifies
	ASSERT_TRUE(lr.ok()) << lr.message();
	EXPECT_EQ(lr->info.epoch, 1u);
	EXPECT_TRUE(out.ram == m.ram);
}

TEST_F(StoreTest, TruncationAtEveryRecordBoundaryAndMidRecord)
{
	Memory m(3000, 1);
	write(1, m, dev);
	Memory m2(3000, 2);
	write(2, m2, dev);
	const std::string p = store->segment_path(2);
	const auto orig = test::read_file(p);
	auto recs = records_of(p);
	ASSERT_GE(recs.size(), 5u);	// layout, >= 2 PAGES, devstate, commit
	std::vector<uint64_t> cuts = {0, 100, sizeof(fmt::FileHeader), 4095};
	for (const auto &r : recs) {
		cuts.push_back(r.offset);			// at the boundary
		cuts.push_back(r.offset + 10);			// inside the record header
		cuts.push_back(r.offset + sizeof(fmt::RecordHeader));	// header only
		cuts.push_back(r.offset + fmt::record_span(r.payload_length) / 2);	// mid-payload
		cuts.push_back(r.offset + fmt::record_span(r.payload_length) - 1);
	}
	const uint64_t seg_end = recs_end(p);
	for (uint64_t cut : cuts) {
		if (cut >= seg_end)
			continue;
		test::write_file(p, orig);
		test::truncate_file(p, cut);
		SegmentInfo si = store->scan(2, ScanDepth::full);
		EXPECT_EQ(si.status, SegmentStatus::torn) << "cut at " << cut << ": " << si.detail;
		EXPECT_FALSE(si.detail.empty());
		EXPECT_EQ(newest(), 1u) << "cut at " << cut;
	}
	// Unwritten (zero-filled) space where a record should be: torn too.
	test::write_file(p, orig);
	test::truncate_file(p, recs.back().offset);
	test::truncate_file(p, recs.back().offset + 8192);
	SegmentInfo si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::torn) << si.detail;
	// The torn epoch number can be written again (O_TRUNC).
	write(2, m2, dev);
	EXPECT_EQ(store->scan(2, ScanDepth::full).status, SegmentStatus::valid);
	EXPECT_EQ(newest(), 2u);
}

TEST_F(StoreTest, LengthFieldClaimingMoreThanExists)
{
	Memory m(16, 1);
	write(1, m, dev);
	write(2, m, dev);
	const std::string p = store->segment_path(2);
	const auto orig = test::read_file(p);
	auto recs = records_of(p);
	uint64_t dev_off = 0;
	for (const auto &r : recs)
		if (r.type == fmt::kRecDevstate)
			dev_off = r.offset;
	ASSERT_NE(dev_off, 0u);

	// Slightly more than the file holds (header crc made consistent).
	auto b = orig;
	rewrite_record_header(b, dev_off, [](fmt::RecordHeader &h) { h.payload_length = 1u << 20; });
	test::write_file(p, b);
	SegmentInfo si = store->scan(2, ScanDepth::full);
	EXPECT_NE(si.status, SegmentStatus::valid);
	EXPECT_NE(si.detail.find("claims"), std::string::npos) << si.detail;
	EXPECT_EQ(newest(), 1u);

	// Far more than any record may hold.
	b = orig;
	rewrite_record_header(b, dev_off, [](fmt::RecordHeader &h) { h.payload_length = 1ull << 40; });
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::full);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("exceeds"), std::string::npos) << si.detail;

	// PAGES count inconsistent with its length.
	b = orig;
	rewrite_record_header(b, recs[1].offset, [](fmt::RecordHeader &h) { h.count += 1; });
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::full);
	EXPECT_EQ(si.status, SegmentStatus::corrupt) << si.detail;

	// Bytes after COMMIT: a recycled file's leftovers in format 4 (never
	// read), corrupt in a format 3 segment.
	b = orig;
	b.resize(b.size() + 4096, 1);
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::full);
	EXPECT_EQ(si.status, SegmentStatus::valid) << si.detail;
	EXPECT_EQ(si.segment_bytes, recs_end(p));
	downgrade_segment(p, 3);	// ends at COMMIT again ...
	b = test::read_file(p);
	b.resize(b.size() + 4096, 1);	// ... plus a block of garbage
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::full);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("trailing"), std::string::npos) << si.detail;

	// Reserved record types are refused in format 1.
	b = orig;
	rewrite_record_header(b, dev_off, [](fmt::RecordHeader &h) { h.type = fmt::kRecDiscard; });
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::full);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_EQ(newest(), 1u);
}

TEST_F(StoreTest, ListAndRetention)
{
	Memory m(8, 1);
	for (uint64_t e = 1; e <= 12; e++) {
		write(e, m, dev);
		auto r = store->apply_retention(RetentionPolicy{});
		ASSERT_TRUE(r.ok()) << r.message();
		EXPECT_EQ(r->epoch, 0u);	// full epochs: nothing to compact
	}
	auto list = store->list(ScanDepth::structure);
	ASSERT_TRUE(list.ok());
	ASSERT_EQ(list->size(), 8u);
	EXPECT_EQ(list->front().epoch, 5u);
	EXPECT_EQ(list->back().epoch, 12u);
	for (const auto &s : *list)
		EXPECT_EQ(s.status, SegmentStatus::valid);
	// Files that are not segments are ignored.
	test::write_file(store->epochs_dir() + "/notes.txt", {1, 2, 3});
	EXPECT_EQ(store->list(ScanDepth::structure)->size(), 8u);
}

TEST_F(StoreTest, FailWriteFaultLeavesNoVisibleEpoch)
{
	Memory m(16, 1);
	write(1, m, dev);
	auto faults = FaultPlan::parse("fail-write:2");
	ASSERT_TRUE(faults.ok());
	auto blocks = m.blocks();
	auto r = store->write_epoch({2, 1, 1, 0, 0}, blocks, dev, *faults);
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.code(), -EIO);
	EXPECT_FALSE(fs::exists(store->segment_path(2)));
	EXPECT_EQ(newest(), 1u);
	EXPECT_FALSE(FaultPlan::parse("explode:1").ok());
	EXPECT_FALSE(FaultPlan::parse("fail-write:x").ok());
}

// ---- delta epochs, chains, retention + compaction, write faults ----

namespace {

// A guest whose every epoch's expected bytes are remembered.
struct Guest {
	Memory m;
	std::map<uint64_t, std::pair<std::vector<unsigned char>, std::vector<unsigned char>>> want;
	explicit Guest(uint64_t pages) : m(pages, 1) {}
	void remember(uint64_t e) { want[e] = {m.ram, m.bios}; }
	// Dirties `n` pages from `first` (stride `stride`); every 5th dirtied page becomes all zero.
	std::vector<PageRef> dirty(uint64_t seed, uint64_t first, uint64_t n, uint64_t stride = 3)
	{
		std::vector<PageRef> pages;
		const uint64_t np = m.ram.size() / kPage;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t p = (first + i * stride) % np;
			if (i % 5 == 4)
				memset(&m.ram[p * kPage], 0, kPage);
			else
				test::fill_random(&m.ram[p * kPage], kPage, seed * 7777 + p);
			pages.push_back({0, p * kPage});
		}
		std::sort(pages.begin(), pages.end(), [](auto &a, auto &b) { return a.offset < b.offset; });
		pages.erase(std::unique(pages.begin(), pages.end(),
					[](auto &a, auto &b) { return a.offset == b.offset; }),
			    pages.end());
		test::fill_random(&m.bios[0], 64, seed);	// bios page 0 dirty too
		pages.push_back({1, 0});
		return pages;
	}
};

} // namespace

class ChainTest : public StoreTest {
protected:
	void full(Guest &g, uint64_t e)
	{
		auto blocks = g.m.blocks();
		auto r = store->write_epoch({e, e - 1, 1, 1000 + e, 10}, blocks, dev);
		ASSERT_TRUE(r.ok()) << r.message();
		g.remember(e);
	}
	WriteStats delta(Guest &g, uint64_t e, uint64_t parent, uint64_t first, uint64_t n,
			 const FaultPlan &faults = FaultPlan())
	{
		auto pages = g.dirty(e, first, n);
		auto blocks = g.m.blocks();
		auto r = store->write_delta_epoch({e, parent, 0, 1000 + e, 10}, blocks, pages, dev, faults);
		EXPECT_TRUE(r.ok()) << r.message();
		if (r.ok())
			g.remember(e);
		return r.ok() ? *r : WriteStats{};
	}
	// Restores e into fresh buffers and compares with what the guest had.
	void expect_restores(Guest &g, uint64_t e)
	{
		Memory out(g.m.ram.size() / kPage, 99);
		auto lr = load(e, out);
		ASSERT_TRUE(lr.ok()) << "epoch " << e << ": " << lr.message();
		EXPECT_EQ(lr->info.epoch, e);
		EXPECT_TRUE(out.ram == g.want[e].first) << "epoch " << e;
		EXPECT_TRUE(out.bios == g.want[e].second) << "epoch " << e;
		EXPECT_EQ(lr->devstate, dev);
	}
	std::map<uint64_t, EpochView> views()
	{
		auto c = store->catalog(ScanDepth::structure);
		EXPECT_TRUE(c.ok());
		std::map<uint64_t, EpochView> m;
		for (auto &v : *c)
			m[v.seg.epoch] = v;
		return m;
	}
};

TEST_F(ChainTest, DeltaHoldsOnlyListedPagesAndZeroEntries)
{
	Guest g(600);
	full(g, 1);
	WriteStats st = delta(g, 2, 1, 10, 50);
	EXPECT_EQ(st.nr_pages, 51u);	// 50 pc.ram + 1 pc.bios
	EXPECT_EQ(st.zero_pages, 10u);	// every 5th became zero: recorded, no data
	EXPECT_EQ(st.data_pages, 41u);
	SegmentInfo si = store->scan(2, ScanDepth::full);
	ASSERT_EQ(si.status, SegmentStatus::valid) << si.detail;
	EXPECT_EQ(si.kind, SegmentKind::delta);
	EXPECT_EQ(si.parent_epoch, 1u);
	EXPECT_EQ(si.nr_zero_pages, 10u);
	EXPECT_EQ(si.page_bytes, 41 * kPage);
	EXPECT_LT(si.segment_bytes, 60 * kPage);	// far smaller than the 600-page guest
	EXPECT_EQ(store->scan(1, ScanDepth::full).kind, SegmentKind::full);
	// Page data 4096-aligned: the first data slot follows the index block.
	auto recs = records_of(store->segment_path(2));
	ASSERT_EQ(recs[1].type, fmt::kRecPages);
	EXPECT_EQ((recs[1].offset + sizeof(fmt::RecordHeader) + fmt::pages_data_offset(51)) % 4096, 0u);
	expect_restores(g, 2);
	expect_restores(g, 1);
	EXPECT_EQ(newest(), 2u);
}

TEST_F(ChainTest, AnyEpochOfALongChainRestoresByteExact)
{
	Guest g(400);
	full(g, 1);
	for (uint64_t e = 2; e <= 12; e++)
		delta(g, e, e - 1, e * 13, 30 + e);
	auto v = views();
	EXPECT_EQ(v[12].chain.size(), 12u);
	EXPECT_EQ(v[12].chain.front(), 1u);
	for (uint64_t e = 1; e <= 12; e++)
		expect_restores(g, e);
	// Another FULL starts a new chain (after a reconnect).
	full(g, 13);
	delta(g, 14, 13, 5, 20);
	v = views();
	EXPECT_EQ(v[14].chain, (std::vector<uint64_t>{13, 14}));
	expect_restores(g, 14);
	auto lr = store->newest_valid();
	ASSERT_TRUE(lr.ok());
	EXPECT_EQ(lr->epoch, 14u);
}

TEST_F(ChainTest, MissingOrCorruptLinkMakesDescendantsUnrestorable)
{
	Guest g(300);
	full(g, 1);
	for (uint64_t e = 2; e <= 6; e++)
		delta(g, e, e - 1, e * 11, 20);
	// Corrupt one page of epoch 4: structure still valid, but a full verify
	// and every load through it fail; newest restorable falls back to 3.
	auto recs = records_of(store->segment_path(4));
	auto b = test::read_file(store->segment_path(4));
	fmt::RecordHeader h;
	memcpy(&h, &b[recs[1].offset], sizeof(h));
	b[recs[1].offset + sizeof(h) + fmt::pages_data_offset(h.count) + 100] ^= 1;
	test::write_file(store->segment_path(4), b);
	EXPECT_EQ(newest(), 3u);
	Memory out(300, 5);
	auto lr = load(6, out);
	EXPECT_FALSE(lr.ok());
	EXPECT_NE(lr.message().find("epoch 4"), std::string::npos) << lr.message();
	auto l0 = load(0, out);	// newest: 6 and 5 and 4 fail through 4, 3 loads
	ASSERT_TRUE(l0.ok()) << l0.message();
	EXPECT_EQ(l0->info.epoch, 3u);
	EXPECT_TRUE(out.ram == g.want[3].first);
	auto full_views = store->catalog(ScanDepth::full);
	ASSERT_TRUE(full_views.ok());
	for (const auto &v : *full_views)
		EXPECT_EQ(v.restorable, v.seg.epoch <= 3) << v.seg.epoch << ": " << v.why;

	// A missing link: 5's parent 4 gone -> 5 and 6 not restorable, reason named.
	ASSERT_EQ(unlink(store->segment_path(4).c_str()), 0);
	auto v = views();
	EXPECT_FALSE(v[5].restorable);
	EXPECT_NE(v[5].why.find("parent epoch 4 is missing"), std::string::npos) << v[5].why;
	EXPECT_FALSE(v[6].restorable);
	EXPECT_NE(v[6].why.find("parent epoch 5 is not restorable"), std::string::npos) << v[6].why;
	EXPECT_TRUE(v[3].restorable);
	EXPECT_FALSE(store->load(6, out.blocks()).ok());
	EXPECT_EQ(newest(), 3u);
	auto hello = store->newest_restorable(ScanDepth::structure);
	ASSERT_TRUE(hello.ok());
	EXPECT_EQ(hello->epoch, 3u);

	// A torn link (crash before commit) has the same effect.
	test::truncate_file(store->segment_path(3), 8192);
	v = views();
	EXPECT_FALSE(v[3].restorable);
	EXPECT_NE(v[3].why.find("torn"), std::string::npos) << v[3].why;
	EXPECT_EQ(newest(), 2u);
}

TEST_F(ChainTest, DeltaSegmentNegativeCases)
{
	Guest g(64);
	full(g, 1);
	delta(g, 2, 1, 0, 20);
	const std::string p = store->segment_path(2);
	const auto orig = test::read_file(p);
	auto recs = records_of(p);
	const uint64_t po = recs[1].offset;
	fmt::RecordHeader h;
	memcpy(&h, &orig[po], sizeof(h));
	auto entry_at = [&](size_t i) { return po + sizeof(fmt::RecordHeader) + i * sizeof(fmt::PageIndexEntry); };
	auto edit_entry = [&](std::vector<unsigned char> &b, size_t i, auto fn) {
		fmt::PageIndexEntry e;
		memcpy(&e, &b[entry_at(i)], sizeof(e));
		fn(e);
		memcpy(&b[entry_at(i)], &e, sizeof(e));
		fmt::RecordHeader rh;
		memcpy(&rh, &b[po], sizeof(rh));
		rh.payload_crc = crc32c(&b[entry_at(0)], rh.count * sizeof(fmt::PageIndexEntry));
		rh.header_crc = crc32c(&rh, offsetof(fmt::RecordHeader, header_crc));
		memcpy(&b[po], &rh, sizeof(rh));
	};
	// A data entry turned ZERO: the data slots no longer match the length.
	auto b = orig;
	edit_entry(b, 0, [](fmt::PageIndexEntry &e) { e.flags = fmt::kPageFZero; e.page_crc = 0; });
	test::write_file(p, b);
	SegmentInfo si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("with data"), std::string::npos) << si.detail;
	// Unknown index flags.
	b = orig;
	edit_entry(b, 1, [](fmt::PageIndexEntry &e) { e.flags = 0x80; });
	test::write_file(p, b);
	EXPECT_EQ(store->scan(2, ScanDepth::structure).status, SegmentStatus::corrupt);
	// A ZERO entry claiming a crc.
	b = orig;
	size_t zi = 4;	// every 5th dirtied page is zero
	edit_entry(b, zi, [](fmt::PageIndexEntry &e) { e.page_crc = 1; });
	test::write_file(p, b);
	EXPECT_EQ(store->scan(2, ScanDepth::structure).status, SegmentStatus::corrupt);
	// A delta whose COMMIT says FULL while it has ZERO entries / a delta
	// without a parent: not a valid kind.
	b = orig;
	uint64_t co = recs.back().offset;
	fmt::CommitPayload c;
	memcpy(&c, &b[co + sizeof(fmt::RecordHeader)], sizeof(c));
	c.epoch_flags = 1;
	memcpy(&b[co + sizeof(fmt::RecordHeader)], &c, sizeof(c));
	rewrite_record_header(b, co, [](fmt::RecordHeader &rh) { (void)rh; });
	{
		fmt::RecordHeader rh;
		memcpy(&rh, &b[co], sizeof(rh));
		rh.payload_crc = crc32c(&c, sizeof(c));
		rh.header_crc = crc32c(&rh, offsetof(fmt::RecordHeader, header_crc));
		memcpy(&b[co], &rh, sizeof(rh));
	}
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("do not form a full, delta"), std::string::npos) << si.detail;
	// The writer refuses bad arguments.
	test::write_file(p, orig);
	auto blocks = g.m.blocks();
	std::vector<PageRef> outside = {{0, 64 * kPage}};
	EXPECT_EQ(store->write_delta_epoch({3, 2, 0, 0, 0}, blocks, outside, dev).code(), -EINVAL);
	std::vector<PageRef> bad_block = {{7, 0}};
	EXPECT_EQ(store->write_delta_epoch({3, 2, 0, 0, 0}, blocks, bad_block, dev).code(), -EINVAL);
	EXPECT_EQ(store->write_delta_epoch({3, 0, 0, 0, 0}, blocks, {}, dev).code(), -EINVAL);
	EXPECT_EQ(store->write_delta_epoch({3, 2, 1, 0, 0}, blocks, {}, dev).code(), -EINVAL);
	// A delta with no pages at all is fine (nothing was written).
	auto empty = store->write_delta_epoch({3, 2, 0, 0, 0}, blocks, {}, dev);
	ASSERT_TRUE(empty.ok()) << empty.message();
	g.remember(3);
	g.want[3] = g.want[2];
	expect_restores(g, 3);
}

TEST_F(ChainTest, RetentionCompactsOldestRetainedIntoABase)
{
	Guest g(500);
	full(g, 1);
	for (uint64_t e = 2; e <= 20; e++)
		delta(g, e, e - 1, e * 17, 25);
	RetentionPolicy pol{5, 1, 0};
	auto cs = store->apply_retention(pol);
	ASSERT_TRUE(cs.ok()) << cs.message();
	EXPECT_EQ(cs->epoch, 16u);	// oldest of the newest 5
	EXPECT_EQ(cs->chain_len, 16u);
	EXPECT_EQ(cs->removed, 15u);
	auto v = views();
	ASSERT_EQ(v.size(), 5u);
	EXPECT_EQ(v.begin()->first, 16u);
	EXPECT_EQ(v[16].seg.kind, SegmentKind::base);
	EXPECT_EQ(v[20].chain, (std::vector<uint64_t>{16, 17, 18, 19, 20}));
	for (uint64_t e = 16; e <= 20; e++)
		expect_restores(g, e);
	EXPECT_FALSE(fs::exists(store->temp_path(16)));
	// With the default thresholds nothing happens for a few more epochs.
	delta(g, 21, 20, 3, 10);
	auto none = store->apply_retention(RetentionPolicy{5, 64, 100});
	ASSERT_TRUE(none.ok());
	EXPECT_EQ(none->epoch, 0u);
	EXPECT_EQ(views().size(), 6u);	// kept more than 5: allowed ("at least")
	for (uint64_t e = 16; e <= 21; e++)
		expect_restores(g, e);
	// Older full epochs simply go.
	full(g, 22);
	for (uint64_t e = 23; e <= 30; e++)
		delta(g, e, e - 1, e, 5);
	auto p2 = plan_retention(*store->catalog(ScanDepth::structure), RetentionPolicy{3, 1000, 100});
	EXPECT_EQ(p2.compact_epoch, 0u);	// 28 is a delta, but below the threshold
	EXPECT_EQ(p2.remove.front(), 21u);	// the old chain is not needed by 28..30
	EXPECT_EQ(p2.remove.back(), 16u);	// newest first
}

namespace {

// Runs `fn` in a child process; returns its wait status.
template <typename F>
int in_child(F fn)
{
	fflush(nullptr);
	pid_t pid = fork();
	if (pid == 0) {
		fn();
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return st;
}

} // namespace

// (fault stage, merge): a crash while writing a base or a merged delta.
class CompactionCrashTest : public ChainTest,
			    public ::testing::WithParamInterface<std::tuple<const char *, bool>> {};

TEST_P(CompactionCrashTest, KillAtAnyStageKeepsEveryRetainedEpochRestorable)
{
	Guest g(400);
	full(g, 1);
	for (uint64_t e = 2; e <= 14; e++)
		delta(g, e, e - 1, e * 19, 30);
	std::vector<uint64_t> before;
	for (auto &[e, v] : views())
		if (v.restorable)
			before.push_back(e);
	const bool merge = std::get<1>(GetParam());
	const RetentionPolicy pol = merge ? RetentionPolicy{5, 1, 1000000, true} : RetentionPolicy{5, 1, 0};
	const std::string spec = std::string(std::get<0>(GetParam())) + ":10";	// 10 = oldest of the newest 5
	auto faults = FaultPlan::parse(spec);
	ASSERT_TRUE(faults.ok()) << faults.message();
	const std::string root = dir.path();
	int st = in_child([&] {
		auto s = Store::open(root, "vm0", false);
		if (!s)
			_exit(3);
		auto r = s->apply_retention(pol, *faults);
		_exit(r.ok() ? 0 : 4);
	});
	ASSERT_TRUE(WIFSIGNALED(st)) << "fault " << spec << " did not crash (status " << st << ")";
	EXPECT_EQ(WTERMSIG(st), SIGKILL);
	// Every retained epoch (the newest 5) restores byte-exact; whatever is
	// left of the older ones is either restorable or gone, never wrong.
	auto v = views();
	for (uint64_t e = 10; e <= 14; e++) {
		ASSERT_TRUE(v.count(e)) << e;
		EXPECT_TRUE(v[e].restorable) << e << ": " << v[e].why;
		expect_restores(g, e);
	}
	for (auto &[e, view] : v)
		if (view.restorable && e < 10)
			expect_restores(g, e);
	EXPECT_EQ(newest(), 14u);
	// A later pass (after a restart) finishes the job and cleans up.
	store->remove_stale_temp_files();
	auto cs = store->apply_retention(pol);
	ASSERT_TRUE(cs.ok()) << cs.message();
	v = views();
	EXPECT_EQ(v.size(), merge ? 6u : 5u);	// a merged delta keeps its root
	EXPECT_EQ(v[10].seg.kind, merge ? SegmentKind::delta : SegmentKind::base);
	EXPECT_EQ(v[10].seg.merged, merge);
	for (uint64_t e = 10; e <= 14; e++)
		expect_restores(g, e);
	EXPECT_FALSE(fs::exists(store->temp_path(10)));
}

INSTANTIATE_TEST_SUITE_P(Stages, CompactionCrashTest,
			 ::testing::Combine(::testing::Values("crash-compaction-writing", "crash-compaction-tmp",
							      "crash-compaction-renamed", "crash-mid-compaction"),
					    ::testing::Bool()),
			 [](const auto &info) {
				 std::string n = std::get<0>(info.param);
				 for (auto &c : n)
					 if (c == '-')
						 c = '_';
				 return n + (std::get<1>(info.param) ? "_merge" : "_base");
			 });

class WriteFaultTest : public ChainTest, public ::testing::WithParamInterface<std::pair<const char *, int>> {};

TEST_P(WriteFaultTest, FailedEpochInvisibleEarlierOnesRestorableNextFullWorks)
{
	Guest g(300);
	full(g, 1);
	delta(g, 2, 1, 7, 40);
	auto faults = FaultPlan::parse(std::string(GetParam().first) + ":3");
	ASSERT_TRUE(faults.ok());
	auto pages = g.dirty(3, 11, 40);
	auto blocks = g.m.blocks();
	auto r = store->write_delta_epoch({3, 2, 0, 0, 0}, blocks, pages, dev, *faults);
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.code(), GetParam().second) << r.message();
	EXPECT_NE(r.message().find("epoch 3"), std::string::npos) << r.message();
	EXPECT_FALSE(fs::exists(store->segment_path(3)));
	EXPECT_EQ(newest(), 2u);
	expect_restores(g, 1);
	expect_restores(g, 2);
	// The engine sends a FULL epoch next; it succeeds (the fault was one-shot for epoch 3).
	auto f = store->write_epoch({4, 3, 1, 0, 0}, blocks, dev, *faults);
	ASSERT_TRUE(f.ok()) << f.message();
	g.remember(4);
	expect_restores(g, 4);
	EXPECT_EQ(newest(), 4u);
}

INSTANTIATE_TEST_SUITE_P(Faults, WriteFaultTest,
			 ::testing::Values(std::make_pair("fail-write", -EIO), std::make_pair("enospc", -ENOSPC),
					   std::make_pair("fail-fdatasync", -EIO)),
			 test::FaultParamName{});

TEST_F(ChainTest, ShortWritesAreResumedByteExact)
{
	Guest g(2200);	// > 1024 pages: several records and multi-MiB writes
	auto faults = FaultPlan::parse("short-write:1,short-write:2");
	ASSERT_TRUE(faults.ok());
	auto blocks = g.m.blocks();
	auto r1 = store->write_epoch({1, 0, 1, 0, 0}, blocks, dev, *faults);
	ASSERT_TRUE(r1.ok()) << r1.message();
	EXPECT_GT(r1->short_writes, 0u);
	g.remember(1);
	auto pages = g.dirty(2, 0, 1500, 1);
	auto r2 = store->write_delta_epoch({2, 1, 0, 0, 0}, blocks, pages, dev, *faults);
	ASSERT_TRUE(r2.ok()) << r2.message();
	EXPECT_GT(r2->short_writes, 0u);
	g.remember(2);
	EXPECT_EQ(store->scan(1, ScanDepth::full).status, SegmentStatus::valid);
	EXPECT_EQ(store->scan(2, ScanDepth::full).status, SegmentStatus::valid);
	expect_restores(g, 1);
	expect_restores(g, 2);
	// Same with O_DIRECT (where the filesystem has it; short lengths stay aligned).
	store->set_direct_io(true);
	auto pages3 = g.dirty(3, 5, 700, 2);
	auto f3 = FaultPlan::parse("short-write:3");
	auto r3 = store->write_delta_epoch({3, 2, 0, 0, 0}, blocks, pages3, dev, *f3);
	ASSERT_TRUE(r3.ok()) << r3.message();
	g.remember(3);
	expect_restores(g, 3);
}

TEST_F(ChainTest, Version1SegmentsStillRead)
{
	// A version-1 segment (what issue 3's hostd wrote): same bytes, version 1,
	// no flags, nr_zero_pages (then reserved) 0.
	Guest g(50);
	full(g, 1);
	downgrade_segment(store->segment_path(1), 1);
	SegmentInfo si = store->scan(1, ScanDepth::full);
	ASSERT_EQ(si.status, SegmentStatus::valid) << si.detail;
	EXPECT_EQ(si.format_version, 1u);
	expect_restores(g, 1);
	delta(g, 2, 1, 3, 10);	// a version-2 delta on a version-1 full
	downgrade_segment(store->segment_path(2), 2);
	si = store->scan(2, ScanDepth::full);
	ASSERT_EQ(si.status, SegmentStatus::valid) << si.detail;
	EXPECT_EQ(si.format_version, 2u);
	expect_restores(g, 2);
	delta(g, 3, 2, 3, 10);	// a version-3 delta on it
	EXPECT_EQ(store->scan(3, ScanDepth::full).format_version, fmt::kFormatVersion);
	expect_restores(g, 3);
	// A version-1/2 COMMIT must not carry a content crc.
	auto b = test::read_file(store->segment_path(2));
	uint64_t co = records_of(store->segment_path(2)).back().offset;
	fmt::CommitPayload c;
	memcpy(&c, &b[co + sizeof(fmt::RecordHeader)], sizeof(c));
	c.content_crc = 1;
	memcpy(&b[co + sizeof(fmt::RecordHeader)], &c, sizeof(c));
	fmt::RecordHeader rh;
	memcpy(&rh, &b[co], sizeof(rh));
	rh.payload_crc = crc32c(&c, sizeof(c));
	rh.header_crc = crc32c(&rh, offsetof(fmt::RecordHeader, header_crc));
	memcpy(&b[co], &rh, sizeof(rh));
	test::write_file(store->segment_path(2), b);
	EXPECT_EQ(store->scan(2, ScanDepth::structure).status, SegmentStatus::corrupt);
}

TEST_F(ChainTest, DurableCommitWithLostDataBlockIsNeverValid)
{
	// Data and COMMIT share one fdatasync, so a crash may leave COMMIT on
	// disk while any other block of the segment is not (reads as zeros).
	// Every such state must be rejected at full depth, and recovery must
	// fall back to the parent.
	Guest g(52);
	full(g, 1);
	delta(g, 2, 1, 3, 40);
	const std::string p = store->segment_path(2);
	const auto orig = test::read_file(p);
	ASSERT_EQ(orig.size() % fmt::kAlign, 0u);
	const size_t nblocks = orig.size() / fmt::kAlign;
	size_t checked = 0;
	for (size_t blk = 0; blk + 1 < nblocks; blk++) {	// every block but COMMIT's
		auto b = orig;
		unsigned char *q = &b[blk * fmt::kAlign];
		bool had_data = false;
		for (size_t i = 0; i < fmt::kAlign; i++)
			had_data |= q[i] != 0;
		if (!had_data)
			continue;	// padding only: never read
		memset(q, 0, fmt::kAlign);
		test::write_file(p, b);
		SegmentInfo si = store->scan(2, ScanDepth::full);
		EXPECT_NE(si.status, SegmentStatus::valid) << "block " << blk << " lost but segment valid";
		auto nv = store->newest_valid();
		ASSERT_TRUE(nv.ok());
		EXPECT_EQ(nv->epoch, 1u) << "block " << blk;
		checked++;
	}
	EXPECT_GE(checked, 30u);	// header, layout, index, devstate, the data slots
	test::write_file(p, orig);
	EXPECT_EQ(store->scan(2, ScanDepth::full).status, SegmentStatus::valid);
}

TEST_F(ChainTest, CommitContentCrcCoversEveryRecord)
{
	// Data and COMMIT share one fdatasync: a COMMIT must be rejected unless
	// the records before it are exactly the ones it was written with, even
	// when each of those records is self-consistent (valid header crc).
	Guest g(51);
	full(g, 1);
	delta(g, 2, 1, 3, 40);
	const std::string p = store->segment_path(2);
	const auto orig = test::read_file(p);
	auto recs = records_of(p);
	ASSERT_GE(recs.size(), 4u);
	// A PAGES record whose index is swapped for another self-consistent one
	// (entry offsets changed, index crc and header crc recomputed).
	for (size_t r = 0; r + 1 < recs.size(); r++) {
		if (recs[r].type != fmt::kRecPages)
			continue;
		auto b = orig;
		fmt::RecordHeader h;
		memcpy(&h, &b[recs[r].offset], sizeof(h));
		auto *idx = &b[recs[r].offset + sizeof(h)];
		fmt::PageIndexEntry e;
		memcpy(&e, idx, sizeof(e));
		e.page_crc ^= 0x5a5a5a5a;
		if (e.flags & fmt::kPageFZero)
			continue;
		memcpy(idx, &e, sizeof(e));
		h.payload_crc = crc32c(idx, h.count * sizeof(fmt::PageIndexEntry));
		h.header_crc = crc32c(&h, offsetof(fmt::RecordHeader, header_crc));
		memcpy(&b[recs[r].offset], &h, sizeof(h));
		test::write_file(p, b);
		SegmentInfo si = store->scan(2, ScanDepth::structure);
		EXPECT_EQ(si.status, SegmentStatus::corrupt);
		EXPECT_NE(si.detail.find("content crc"), std::string::npos) << si.detail;
		break;
	}
	// A DEVSTATE record of another epoch's content (payload + crcs consistent).
	{
		auto b = orig;
		uint64_t off = recs[recs.size() - 2].offset;
		ASSERT_EQ(recs[recs.size() - 2].type, fmt::kRecDevstate);
		fmt::RecordHeader h;
		memcpy(&h, &b[off], sizeof(h));
		ASSERT_GT(h.payload_length, 0u);
		b[off + sizeof(h)] ^= 1;
		h.payload_crc = crc32c(&b[off + sizeof(h)], h.payload_length);
		h.header_crc = crc32c(&h, offsetof(fmt::RecordHeader, header_crc));
		memcpy(&b[off], &h, sizeof(h));
		test::write_file(p, b);
		SegmentInfo si = store->scan(2, ScanDepth::structure);
		EXPECT_EQ(si.status, SegmentStatus::corrupt);
		EXPECT_NE(si.detail.find("content crc"), std::string::npos) << si.detail;
	}
	// The stored content crc itself flipped (COMMIT crcs recomputed).
	{
		auto b = orig;
		uint64_t co = recs.back().offset;
		fmt::CommitPayload c;
		memcpy(&c, &b[co + sizeof(fmt::RecordHeader)], sizeof(c));
		c.content_crc ^= 1;
		memcpy(&b[co + sizeof(fmt::RecordHeader)], &c, sizeof(c));
		fmt::RecordHeader rh;
		memcpy(&rh, &b[co], sizeof(rh));
		rh.payload_crc = crc32c(&c, sizeof(c));
		rh.header_crc = crc32c(&rh, offsetof(fmt::RecordHeader, header_crc));
		memcpy(&b[co], &rh, sizeof(rh));
		test::write_file(p, b);
		SegmentInfo si = store->scan(2, ScanDepth::structure);
		EXPECT_EQ(si.status, SegmentStatus::corrupt);
		EXPECT_NE(si.detail.find("content crc"), std::string::npos) << si.detail;
	}
	test::write_file(p, orig);
	EXPECT_EQ(store->scan(2, ScanDepth::full).status, SegmentStatus::valid);
	expect_restores(g, 2);
}

// ---- gathered writes and newest-copy-only compaction ----

TEST(UringWriter, WritevIsResumedAfterShortWritesAndRejectsTooManyIovecs)
{
	test::TempDir d;
	const std::string path = d.path() + "/f";
	UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
	ASSERT_TRUE(fd.valid());
	auto ring = Uring::create(8);
	ASSERT_TRUE(ring.ok()) << ring.message();
	std::vector<unsigned char> a(4096, 'a'), b(8192, 'b'), c(100, 'c');
	{
		UringFileWriter w(*ring, fd.get(), "f");
		UringFaults f;
		f.short_writes = true;	// every write first goes in at about half its length
		w.inject(f);
		struct iovec v1[] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
		ASSERT_TRUE(w.writev(v1, 3, 0, 1).ok());
		struct iovec v2[] = {{c.data(), c.size()}, {a.data(), 10}};
		ASSERT_TRUE(w.writev(v2, 2, 20000, 2).ok());
		ASSERT_TRUE(w.fdatasync().ok());
		EXPECT_GT(w.short_writes(), 0u);
		EXPECT_EQ(w.bytes_written(), a.size() + b.size() + 2 * c.size() + 10);
		std::vector<struct iovec> many(IOV_MAX + 1, {a.data(), 1});
		auto s = w.writev(many.data(), many.size(), 0, 3);
		EXPECT_EQ(s.code(), -EINVAL);
	}
	auto got = test::read_file(path);
	ASSERT_EQ(got.size(), 20110u);
	std::vector<unsigned char> want(20110, 0);
	memcpy(&want[0], a.data(), a.size());
	memcpy(&want[4096], b.data(), b.size());
	memcpy(&want[12288], c.data(), c.size());
	memcpy(&want[20000], c.data(), c.size());
	memcpy(&want[20100], a.data(), 10);
	EXPECT_TRUE(got == want);
}

namespace {
// Flips one byte of the first data page of segment `path`'s first PAGES record.
void corrupt_first_data_page(const std::string &path)
{
	auto b = test::read_file(path);
	for (const auto &r : records_of(path)) {
		if (r.type != fmt::kRecPages)
			continue;
		fmt::RecordHeader h;
		memcpy(&h, &b[r.offset], sizeof(h));
		b[r.offset + sizeof(h) + fmt::pages_data_offset(h.count) + 100] ^= 0x5a;
		test::write_file(path, b);
		return;
	}
	FAIL() << "no PAGES record in " << path;
}
} // namespace

TEST_F(ChainTest, CompactionReadsEachPageOnlyFromItsNewestCopy)
{
	Guest g(300);
	full(g, 1);
	for (uint64_t e = 2; e <= 8; e++)
		delta(g, e, e - 1, 0, 40);	// the same 40 pages (and bios page 0) every epoch
	// Epoch 3's copy of page 0 rots; epochs 4..8 wrote page 0 again.
	corrupt_first_data_page(store->segment_path(3));
	EXPECT_EQ(store->scan(3, ScanDepth::full).status, SegmentStatus::corrupt);
	auto cs = store->apply_retention(RetentionPolicy{2, 1, 0});
	ASSERT_TRUE(cs.ok()) << cs.message();	// the rotten copy is superseded: never read
	EXPECT_EQ(cs->epoch, 7u);
	EXPECT_EQ(store->scan(7, ScanDepth::full).status, SegmentStatus::valid);
	expect_restores(g, 7);
	expect_restores(g, 8);

	// The newest copy of a page at the compacted epoch is corrupt: the
	// compaction fails naming it, writes no base and deletes nothing.
	for (uint64_t e = 9; e <= 12; e++)
		delta(g, e, e - 1, 100, 40);
	corrupt_first_data_page(store->segment_path(11));
	auto bad = store->apply_retention(RetentionPolicy{2, 1, 0});
	ASSERT_FALSE(bad.ok());
	EXPECT_NE(bad.message().find("epoch 11"), std::string::npos) << bad.message();
	EXPECT_NE(bad.message().find("crc mismatch"), std::string::npos) << bad.message();
	EXPECT_FALSE(fs::exists(store->temp_path(11)));
	auto v = views();
	for (uint64_t e = 7; e <= 12; e++)
		EXPECT_TRUE(v.count(e)) << e;
	EXPECT_EQ(v[11].seg.kind, SegmentKind::delta);
	expect_restores(g, 10);
}

TEST_F(ChainTest, ZeroCopyWritesFromAlignedMemoryWithODirectAndShortWrites)
{
	// Page-aligned "staging" memory, as slsvirtd has (a memfd mapping): the
	// writer gathers page data straight from it.
	const uint64_t np = 700;
	void *mem = nullptr;
	ASSERT_EQ(posix_memalign(&mem, kPage, np * kPage), 0);
	std::unique_ptr<unsigned char, decltype(&free)> ram(static_cast<unsigned char *>(mem), &free);
	for (uint64_t p = 0; p < np; p++)
		if (p % 7)
			test::fill_random(ram.get() + p * kPage, kPage, p);
		else
			memset(ram.get() + p * kPage, 0, kPage);
	std::vector<RamBlockMem> blocks = {{"pc.ram", np * kPage, ram.get()}};
	store->set_direct_io(true);
	ASSERT_TRUE(store->write_epoch({1, 0, 1, 0, 0}, blocks, dev).ok());
	std::vector<unsigned char> want1(ram.get(), ram.get() + np * kPage);
	std::vector<PageRef> pages;
	for (uint64_t p = 3; p < np; p += 2) {	// scattered, every 7th listed one zero
		test::fill_random(ram.get() + p * kPage, kPage, 1000 + p);
		if (p % 7 == 0)
			memset(ram.get() + p * kPage, 0, kPage);
		pages.push_back({0, p * kPage});
	}
	auto faults = FaultPlan::parse("short-write:2");
	ASSERT_TRUE(faults.ok());
	auto r = store->write_delta_epoch({2, 1, 0, 0, 0}, blocks, pages, dev, *faults);
	ASSERT_TRUE(r.ok()) << r.message();
	EXPECT_GT(r->zero_pages, 0u);
	EXPECT_GT(r->short_writes, 0u);
	std::vector<unsigned char> want2(ram.get(), ram.get() + np * kPage);
	EXPECT_EQ(store->scan(2, ScanDepth::full).status, SegmentStatus::valid);
	for (auto [e, want] : {std::pair{1ul, &want1}, std::pair{2ul, &want2}}) {
		std::vector<unsigned char> out(np * kPage, 0xEE);
		std::vector<RamBlockMem> dest = {{"pc.ram", out.size(), out.data()}};
		auto lr = store->load(e, dest);
		ASSERT_TRUE(lr.ok()) << lr.message();
		EXPECT_TRUE(out == *want) << "epoch " << e;
	}
}

// ---- spare files: retired segments overwritten in place by new epochs ----

namespace {

ino_t inode_of(const std::string &path)
{
	struct stat sb;
	return stat(path.c_str(), &sb) == 0 ? sb.st_ino : 0;
}

// Regular files in dir, by name.
std::vector<std::string> files_in(const std::string &dir)
{
	std::vector<std::string> out;
	for (const auto &e : fs::directory_iterator(dir))
		out.push_back(e.path().filename().string());
	std::sort(out.begin(), out.end());
	return out;
}

} // namespace

class SpareTest : public ChainTest {
protected:
	// Full 1, deltas 2..12 of the same page count, then retention (keep 3,
	// compact as soon as possible): base 10, segments 1..9 retired. Returns
	// the content of every segment file before retirement, by inode.
	std::map<ino_t, std::vector<unsigned char>> build(Guest &g)
	{
		full(g, 1);
		for (uint64_t e = 2; e <= 12; e++)
			delta(g, e, e - 1, e * 17, 40);
		std::map<ino_t, std::vector<unsigned char>> before;
		for (uint64_t e = 1; e <= 12; e++)
			before[inode_of(store->segment_path(e))] = test::read_file(store->segment_path(e));
		auto cs = store->apply_retention(RetentionPolicy{3, 1, 0});
		EXPECT_TRUE(cs.ok()) << cs.message();
		EXPECT_EQ(cs->epoch, 10u);
		return before;
	}
};

TEST_F(SpareTest, RetiredSegmentIsReusedInPlaceAndRestoresByteExact)
{
	Guest g(400);
	build(g);
	auto spares = store->spare_files();
	ASSERT_EQ(spares.size(), 9u);	// 1..9: none needed once base 10 is durable
	std::map<ino_t, uint64_t> spare_size;
	for (const auto &[p, size] : spares) {
		EXPECT_EQ(p.find(store->epochs_dir() + "/spare-"), 0u) << p;
		spare_size[inode_of(p)] = size;
		// A spare no longer reads as its old epoch: its header is zeroed.
		EXPECT_FALSE(scan_segment(p, 0, "vm0", ScanDepth::structure).header_valid) << p;
	}
	// The catalog holds exactly the retained epochs.
	auto v = views();
	ASSERT_EQ(v.size(), 3u);
	EXPECT_EQ(v.begin()->first, 10u);

	WriteStats ws = delta(g, 13, 12, 5, 40);
	EXPECT_TRUE(ws.reused_spare);
	EXPECT_EQ(ws.pad_bytes, 0u);
	EXPECT_EQ(ws.path, store->segment_path(13));
	const ino_t ino = inode_of(store->segment_path(13));
	ASSERT_TRUE(spare_size.count(ino)) << "epoch 13 was not written over a spare";
	struct stat sb;
	ASSERT_EQ(stat(store->segment_path(13).c_str(), &sb), 0);
	EXPECT_EQ(static_cast<uint64_t>(sb.st_size), spare_size[ino]);	// no size change
	EXPECT_GE(static_cast<uint64_t>(sb.st_size), ws.file_bytes);
	EXPECT_FALSE(fs::exists(ws.written_path));	// renamed to the epoch's name
	EXPECT_EQ(store->spare_files().size(), 8u);
	SegmentInfo si = store->scan(13, ScanDepth::full);
	ASSERT_EQ(si.status, SegmentStatus::valid) << si.detail;
	EXPECT_EQ(si.segment_bytes, ws.file_bytes);
	for (uint64_t e = 10; e <= 13; e++)
		expect_restores(g, e);
	EXPECT_EQ(newest(), 13u);

	// Many more epochs: every one goes over a spare, the store keeps working.
	for (uint64_t e = 14; e <= 30; e++) {
		WriteStats w = delta(g, e, e - 1, e * 5, 40);
		ASSERT_TRUE(store->apply_retention(RetentionPolicy{3, 1, 0}).ok());
		EXPECT_TRUE(w.reused_spare) << "epoch " << e;
	}
	for (uint64_t e = 28; e <= 30; e++)
		expect_restores(g, e);
	// A reused file's leftovers (old records after COMMIT) are never read.
	EXPECT_EQ(store->scan(30, ScanDepth::full).status, SegmentStatus::valid);
}

TEST_F(SpareTest, TornOverwriteOfSpareNeverVerifiesAsTheNewEpoch)
{
	Guest g(400);
	auto before = build(g);
	WriteStats ws = delta(g, 13, 12, 5, 40);
	ASSERT_TRUE(ws.reused_spare);
	const std::string p = store->segment_path(13);
	const auto now = test::read_file(p);
	ASSERT_TRUE(before.count(inode_of(p)));
	// What the file held before: a valid old epoch, header included (as if
	// the header zeroing at retirement had been lost to a power loss too).
	const auto old = before[inode_of(p)];
	ASSERT_EQ(old.size(), now.size());
	const size_t nblocks = ws.file_bytes / fmt::kAlign;	// the new segment's blocks, COMMIT last
	Memory out(g.m.ram.size() / kPage, 99);
	auto check_fallback = [&](const std::string &what) {
		auto nv = store->newest_valid();
		ASSERT_TRUE(nv.ok()) << what;
		EXPECT_EQ(nv->epoch, 12u) << what;
		auto lr = load(0, out);
		ASSERT_TRUE(lr.ok()) << what << ": " << lr.message();
		EXPECT_EQ(lr->info.epoch, 12u) << what;
		EXPECT_TRUE(out.ram == g.want[12].first) << what;
	};
	// 1. The write stopped after k blocks (no COMMIT): the old bytes after
	// them never complete the new epoch: torn, whatever they are.
	size_t torn = 0;
	for (size_t k = 1; k + 1 < nblocks; k++) {
		auto b = old;
		memcpy(b.data(), now.data(), k * fmt::kAlign);
		test::write_file(p, b);
		SegmentInfo si = scan_segment(p, 0, "vm0", ScanDepth::full);
		ASSERT_TRUE(si.header_valid);
		EXPECT_EQ(si.epoch, 13u);
		EXPECT_EQ(si.status, SegmentStatus::torn) << "first " << k << " blocks written: " << si.detail;
		torn += si.status == SegmentStatus::torn;
		check_fallback(strf("first %zu blocks written", k));
	}
	EXPECT_GE(torn, 5u);
	// 2. COMMIT durable, any one other block still the old file's: corrupt
	// (its content crc or a page crc), never valid.
	size_t checked = 0;
	for (size_t blk = 0; blk + 1 < nblocks; blk++) {
		if (!memcmp(&old[blk * fmt::kAlign], &now[blk * fmt::kAlign], fmt::kAlign))
			continue;
		auto b = now;
		memcpy(&b[blk * fmt::kAlign], &old[blk * fmt::kAlign], fmt::kAlign);
		test::write_file(p, b);
		SegmentInfo si = scan_segment(p, 0, "vm0", ScanDepth::full);
		EXPECT_NE(si.status, SegmentStatus::valid) << "block " << blk << " stale but segment valid";
		check_fallback(strf("block %zu stale", blk));
		checked++;
	}
	EXPECT_GE(checked, 10u);
	// 3. Nothing of the new epoch reached the disk: the file is its old
	// epoch again -- an old, unneeded segment, not epoch 13.
	test::write_file(p, old);
	check_fallback("nothing written");
	test::write_file(p, now);
	EXPECT_EQ(newest(), 13u);
	expect_restores(g, 13);
}

TEST_F(SpareTest, SegmentsAreFoundByHeaderWhateverTheirNames)
{
	Guest g(200);
	full(g, 1);
	for (uint64_t e = 2; e <= 4; e++)
		delta(g, e, e - 1, e * 3, 20);
	// A power loss kept a reused spare's old name (epoch 3), and a retired
	// file's epoch name for what is now epoch 4.
	const std::string spare_name = store->epochs_dir() + "/" + spare_file_name(9);
	ASSERT_EQ(rename(store->segment_path(3).c_str(), spare_name.c_str()), 0);
	ASSERT_EQ(rename(store->segment_path(4).c_str(), store->segment_path(7).c_str()), 0);
	auto v = views();
	ASSERT_EQ(v.size(), 4u);
	EXPECT_FALSE(v.count(7));
	EXPECT_EQ(v[3].seg.path, spare_name);
	EXPECT_EQ(v[4].seg.path, store->segment_path(7));
	EXPECT_TRUE(v[4].restorable) << v[4].why;
	EXPECT_EQ(store->scan(4, ScanDepth::full).status, SegmentStatus::valid);
	EXPECT_EQ(newest(), 4u);
	expect_restores(g, 3);
	expect_restores(g, 4);
	// A file under an epoch's name whose header names another epoch is that
	// other epoch; asked for by path and epoch, it is a clear mismatch.
	SegmentInfo si = scan_segment(store->segment_path(7), 7, "vm0", ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("file header says epoch 4, expected epoch 7"), std::string::npos) << si.detail;
	// Startup puts the names right.
	auto rec = store->recover();
	ASSERT_TRUE(rec.ok()) << rec.message();
	EXPECT_EQ(*rec, 2u);
	EXPECT_EQ(files_in(store->epochs_dir()),
		  (std::vector<std::string>{segment_file_name(1), segment_file_name(2), segment_file_name(3),
					    segment_file_name(4)}));
	EXPECT_TRUE(store->spare_files().empty());
	expect_restores(g, 4);
	// Two files claiming one epoch: the valid one wins (here: over a torn copy).
	auto torn = test::read_file(store->segment_path(4));
	torn.resize(3 * fmt::kAlign);
	test::write_file(store->epochs_dir() + "/" + spare_file_name(4), torn);
	v = views();
	EXPECT_EQ(v[4].seg.path, store->segment_path(4));
	EXPECT_EQ(v[4].seg.status, SegmentStatus::valid);
	// ... and recover() turns the loser into a spare.
	ASSERT_TRUE(store->recover().ok());
	EXPECT_EQ(store->spare_files().size(), 1u);
	EXPECT_EQ(views().size(), 4u);
	expect_restores(g, 4);
}

TEST_F(SpareTest, PoolIsBoundedByCountAndBytesAndSurvivesRestart)
{
	store->set_spare_limits(4, kDefaultSpareBytes);
	Guest g(400);
	build(g);
	auto spares = store->spare_files();
	ASSERT_EQ(spares.size(), 4u);
	// Exactly the retained segments and the spares are left; the rest went.
	auto names = files_in(store->epochs_dir());
	EXPECT_EQ(names.size(), 3u + 4u);
	for (const auto &n : names)
		EXPECT_TRUE(n.rfind("spare-", 0) == 0 || n == segment_file_name(10) || n == segment_file_name(11) ||
			    n == segment_file_name(12))
			<< n;
	// A byte bound: the pool drops its largest spares until it fits.
	uint64_t total = 0;
	for (const auto &s : spares)
		total += s.second;
	store->set_spare_limits(4, total - 1);
	spares = store->spare_files();
	EXPECT_EQ(spares.size(), 3u);
	total = 0;
	for (const auto &s : spares)
		total += s.second;
	EXPECT_LE(total, kDefaultSpareBytes);
	EXPECT_EQ(files_in(store->epochs_dir()).size(), 3u + 3u);
	// Another Store on the same directory (a restarted slsvirtd) finds them.
	auto s2 = Store::open(dir.path(), "vm0", false);
	ASSERT_TRUE(s2.ok());
	auto rec = s2->recover();
	ASSERT_TRUE(rec.ok()) << rec.message();
	EXPECT_EQ(*rec, 0u);
	EXPECT_EQ(s2->spare_files().size(), 3u);
	// No room: retired segments are deleted.
	s2->set_spare_limits(0, 0);
	EXPECT_TRUE(s2->spare_files().empty());
	EXPECT_EQ(files_in(store->epochs_dir()).size(), 3u);
	store.emplace(std::move(*s2));
	for (uint64_t e = 13; e <= 16; e++)
		EXPECT_FALSE(delta(g, e, e - 1, e, 40).reused_spare);
	ASSERT_TRUE(store->apply_retention(RetentionPolicy{3, 1, 0}).ok());
	EXPECT_TRUE(store->spare_files().empty());
	EXPECT_EQ(files_in(store->epochs_dir()).size(), 3u);
	expect_restores(g, 16);
}

// A second Store of the same directory (slsvirtd serving a VM again after
// a restore) pools the spares the first one made and makes new ones beside
// them: fresh names, never "File exists".
TEST_F(SpareTest, SparesMadeAgainAfterAReconnectGetFreshNames)
{
	Guest g(300);
	full(g, 1);
	for (uint64_t e = 2; e <= 4; e++)
		delta(g, e, e - 1, e * 5, 30);
	auto m1 = store->make_spares();
	ASSERT_TRUE(m1.ok()) << m1.message();
	EXPECT_EQ(*m1, kDefaultSpareReserve);
	auto s2 = Store::open(dir.path(), "vm0", false);
	ASSERT_TRUE(s2.ok());
	ASSERT_TRUE(s2->recover().ok());
	EXPECT_EQ(s2->spare_files().size(), kDefaultSpareReserve);
	store.emplace(std::move(*s2));
	for (uint64_t e = 5; e <= 7; e++)
		EXPECT_TRUE(delta(g, e, e - 1, e * 5, 30).reused_spare);
	auto m2 = store->make_spares();
	ASSERT_TRUE(m2.ok()) << m2.message();
	EXPECT_EQ(*m2, 3u);
	std::set<std::string> names;
	for (const auto &[p, size] : store->spare_files())
		EXPECT_TRUE(names.insert(p).second) << p;
	EXPECT_EQ(names.size(), kDefaultSpareReserve);
	for (uint64_t e = 5; e <= 7; e++)
		expect_restores(g, e);
}

TEST_F(SpareTest, FailedWriteOverSpareLeavesNoVisibleEpoch)
{
	Guest g(400);
	build(g);
	const size_t n = store->spare_files().size();
	for (const char *f : {"fail-write:13", "fail-fdatasync:13", "enospc:13"}) {
		auto faults = FaultPlan::parse(f);
		ASSERT_TRUE(faults.ok());
		auto pages = g.dirty(13, 7, 40);
		auto blocks = g.m.blocks();
		auto r = store->write_delta_epoch({13, 12, 0, 0, 0}, blocks, pages, dev, *faults);
		ASSERT_FALSE(r.ok()) << f;
		EXPECT_NE(r.message().find("epoch 13"), std::string::npos) << r.message();
		EXPECT_EQ(newest(), 12u) << f;
		EXPECT_FALSE(views().count(13)) << f;
	}
	EXPECT_LT(store->spare_files().size(), n);	// a failed spare is deleted, not reused
	EXPECT_TRUE(store->spare_files().empty() || store->spare_files().size() >= n - 3);
	delta(g, 13, 12, 7, 40);
	expect_restores(g, 13);
}

TEST_F(SpareTest, RetirementCutBeforeItsRenameLeavesNoTornEpoch)
{
	Guest g(200);
	full(g, 1);
	for (uint64_t e = 2; e <= 4; e++)
		delta(g, e, e - 1, e * 3, 20);
	// hostd killed inside a retirement: epoch 2's header zeroed, the rename
	// to a spare name not done. No epoch 2 (torn or otherwise) is listed.
	auto b = test::read_file(store->segment_path(2));
	memset(b.data(), 0, fmt::kAlign);
	test::write_file(store->segment_path(2), b);
	auto v = views();
	EXPECT_FALSE(v.count(2));
	EXPECT_EQ(v.size(), 3u);
	EXPECT_FALSE(v[3].restorable);	// its parent is gone, as after a retirement
	// A header cut short is still a torn epoch under its name.
	test::truncate_file(store->segment_path(4), 100);
	v = views();
	ASSERT_TRUE(v.count(4));
	EXPECT_EQ(v[4].seg.status, SegmentStatus::torn);
	// Startup takes the blank file in as a spare.
	ASSERT_TRUE(store->recover().ok());
	EXPECT_EQ(store->spare_files().size(), 1u);
	EXPECT_FALSE(fs::exists(store->segment_path(2)));
	EXPECT_TRUE(fs::exists(store->segment_path(4)));	// torn: left for inspection
}

// ---- lazy restore maps, held segment files, branches and pins ----

namespace {

// Materialises a lazy map the way QEMU's fault thread reads it: every page
// from its file at its offset, checked against its crc; absent pages zero.
Memory materialise(const LazyMap &m, uint64_t ram_pages)
{
	Memory out(ram_pages, 5);
	std::fill(out.ram.begin(), out.ram.end(), 0);
	std::fill(out.bios.begin(), out.bios.end(), 0);
	for (const auto &p : m.pages) {
		auto &dst = p.block == 0 ? out.ram : out.bios;
		EXPECT_EQ(pread(m.files[p.file].get(), &dst[p.offset], kPage, static_cast<off_t>(p.file_offset)),
			  static_cast<ssize_t>(kPage));
		EXPECT_EQ(crc32c(&dst[p.offset], kPage), p.crc) << "block " << p.block << " offset " << p.offset;
	}
	return out;
}

const std::vector<RamBlockDesc> kLayout = {{"pc.ram", 400 * kPage}, {"pc.bios", 16 * kPage}};
const std::vector<RamBlockDesc> kLayout200 = {{"pc.ram", 200 * kPage}, {"pc.bios", 16 * kPage}};

} // namespace

// Below the base threshold the deltas on the root are merged into one
// delta (flag MERGED, parent = the root), so compaction writes what changed,
// not the whole image; a ZERO entry in a folded delta stays one.
TEST_F(ChainTest, RetentionMergesTheDeltasOnTheRootIntoOne)
{
	Guest g(500);
	full(g, 1);
	std::set<uint64_t> hot;	// pages the deltas 2..20 set (Guest::dirty, stride 3)
	for (uint64_t e = 2; e <= 24; e++) {
		delta(g, e, e - 1, 100 + (e % 4) * 10, 20);	// a hot set: about 30 pages
		for (uint64_t i = 0; e <= 20 && i < 20; i++)
			hot.insert(100 + (e % 4) * 10 + 3 * i);
	}
	const RetentionPolicy pol{5, 4, 200, true};	// 19 deltas: more bytes than the root, below 200%
	auto plan = plan_retention(*store->catalog(ScanDepth::structure), pol);
	EXPECT_EQ(plan.compact_epoch, 20u);
	EXPECT_TRUE(plan.merge);
	auto cs = store->apply_retention(pol);
	ASSERT_TRUE(cs.ok()) << cs.message();
	EXPECT_EQ(cs->epoch, 20u);
	EXPECT_TRUE(cs->merged);
	EXPECT_EQ(cs->chain_len, 19u);	// deltas 2..20
	EXPECT_EQ(cs->removed, 18u);	// 2..19; the root stays
	EXPECT_EQ(cs->pages, hot.size() + 1);	// the union + the pc.bios page, ZERO ones included
	auto v = views();
	ASSERT_EQ(v.size(), 6u);
	EXPECT_EQ(v[1].seg.kind, SegmentKind::full);
	EXPECT_EQ(v[20].seg.kind, SegmentKind::delta);
	EXPECT_TRUE(v[20].seg.merged);
	EXPECT_EQ(v[20].seg.parent_epoch, 1u);
	EXPECT_GT(v[20].seg.nr_zero_pages, 0u);
	EXPECT_LT(v[20].seg.segment_bytes, (hot.size() + 8) * kPage);	// not a 500-page image
	EXPECT_EQ(v[24].chain, (std::vector<uint64_t>{1, 20, 21, 22, 23, 24}));
	for (uint64_t e = 20; e <= 24; e++)
		expect_restores(g, e);
	auto full_views = store->catalog(ScanDepth::full);
	ASSERT_TRUE(full_views.ok());
	for (const auto &fv : *full_views)
		EXPECT_TRUE(fv.restorable) << fv.seg.epoch << ": " << fv.why;
	// The lazy map goes through the merged delta too.
	auto m = store->map_epoch(24, std::vector<RamBlockDesc>{{"pc.ram", 500 * kPage}, {"pc.bios", 16 * kPage}}, 0);
	ASSERT_TRUE(m.ok()) << m.message();
	EXPECT_EQ(m->chain, (std::vector<uint64_t>{1, 20, 21, 22, 23, 24}));
	Memory out = materialise(*m, 500);
	EXPECT_TRUE(out.ram == g.want[24].first);
	EXPECT_TRUE(out.bios == g.want[24].second);

	// The next merge waits until the new deltas hold as many bytes as the
	// last merged one, then folds it again with them.
	delta(g, 25, 24, 100 + (25 % 4) * 10, 20);
	auto p2 = plan_retention(*store->catalog(ScanDepth::structure), RetentionPolicy{5, 1, 200, true});
	EXPECT_EQ(p2.compact_epoch, 0u) << "the new delta 21 holds fewer bytes than the merged 20";
	for (uint64_t e = 26; e <= 34; e++)
		delta(g, e, e - 1, 100 + (e % 4) * 10, 20);
	auto cs2 = store->apply_retention(RetentionPolicy{5, 2, 200, true});
	ASSERT_TRUE(cs2.ok()) << cs2.message();
	EXPECT_EQ(cs2->epoch, 30u);
	EXPECT_TRUE(cs2->merged);
	v = views();
	EXPECT_EQ(v[34].chain, (std::vector<uint64_t>{1, 30, 31, 32, 33, 34}));
	EXPECT_FALSE(v.count(20));
	for (uint64_t e = 30; e <= 34; e++)
		expect_restores(g, e);

	// Once the deltas on the root hold as many bytes as the root, a base.
	for (uint64_t e = 35; e <= 60; e++)
		delta(g, e, e - 1, (e * 37) % 480, 20);	// all over RAM
	auto cs3 = store->apply_retention(RetentionPolicy{5, 2, 50, true});
	ASSERT_TRUE(cs3.ok()) << cs3.message();
	EXPECT_EQ(cs3->epoch, 56u);
	EXPECT_FALSE(cs3->merged);
	v = views();
	EXPECT_EQ(v[56].seg.kind, SegmentKind::base);
	EXPECT_FALSE(v.count(1));
	for (uint64_t e = 56; e <= 60; e++)
		expect_restores(g, e);
	// merge = false: bases only, as before merges existed.
	for (uint64_t e = 61; e <= 70; e++)
		delta(g, e, e - 1, 7, 5);
	auto p4 = plan_retention(*store->catalog(ScanDepth::structure), RetentionPolicy{5, 2, 100, false});
	EXPECT_EQ(p4.compact_epoch, 0u);
	EXPECT_FALSE(p4.merge);
}

// A merged delta that claims FULL is not a segment of any kind.
TEST_F(ChainTest, MergedFlagOnAFullSegmentIsCorrupt)
{
	Guest g(50);
	full(g, 1);
	const std::string p = store->segment_path(1);
	auto b = test::read_file(p);
	fmt::FileHeader fh;
	memcpy(&fh, b.data(), sizeof(fh));
	fh.flags |= fmt::kSegFMerged;
	fh.header_crc = crc32c(&fh, offsetof(fmt::FileHeader, header_crc));
	memcpy(b.data(), &fh, sizeof(fh));
	test::write_file(p, b);
	SegmentInfo si = store->scan(1, ScanDepth::structure);
	EXPECT_NE(si.status, SegmentStatus::valid);
}

TEST_F(ChainTest, LazyMapOfAnyEpochGivesItsBytesFromTheNewestCopies)
{
	Guest g(400);
	full(g, 1);
	for (uint64_t e = 2; e <= 9; e++)
		delta(g, e, e - 1, e * 13, 40);	// every 5th dirtied page becomes zero
	for (uint64_t e : {1, 4, 9}) {
		auto m = store->map_epoch(e, kLayout, 0);
		ASSERT_TRUE(m.ok()) << m.message();
		EXPECT_EQ(m->info.epoch, e);
		EXPECT_EQ(m->files.size(), e);	// chain 1..e
		EXPECT_EQ(m->devstate, dev);
		Memory out = materialise(*m, 400);
		EXPECT_TRUE(out.ram == g.want[e].first) << "epoch " << e;
		EXPECT_TRUE(out.bios == g.want[e].second) << "epoch " << e;
		for (size_t i = 1; i < m->pages.size(); i++)	// sorted, each page once
			EXPECT_TRUE(m->pages[i - 1].block < m->pages[i].block ||
				    (m->pages[i - 1].block == m->pages[i].block &&
				     m->pages[i - 1].offset < m->pages[i].offset));
	}
	auto newest = store->map_epoch(0, kLayout, 0);
	ASSERT_TRUE(newest.ok());
	EXPECT_EQ(newest->info.epoch, 9u);
	// Wrong layout, unknown epoch.
	EXPECT_EQ(store->map_epoch(9, std::vector<RamBlockDesc>{{"pc.ram", 400 * kPage}}, 0).code(), -EINVAL);
	EXPECT_EQ(store->map_epoch(77, kLayout, 0).code(), -ENOENT);
}

TEST_F(ChainTest, LazyMapDoesNotReadPagesSoACorruptPageIsCaughtByItsReader)
{
	Guest g(200);
	full(g, 1);
	delta(g, 2, 1, 3, 30);
	auto m = store->map_epoch(2, kLayout200, 0);
	ASSERT_TRUE(m.ok()) << m.message();
	ASSERT_FALSE(m->pages.empty());
	// Flip a byte of one page of segment 2 on disk: the map is unchanged
	// (structure only), the page's crc no longer matches.
	const LazyPage *victim = nullptr;
	for (const auto &p : m->pages)
		if (p.file == 1)
			victim = &p;
	ASSERT_NE(victim, nullptr);
	auto bytes = test::read_file(store->segment_path(2));
	bytes[victim->file_offset + 100] ^= 0xff;
	UniqueFd fd(open(store->segment_path(2).c_str(), O_WRONLY));
	ASSERT_EQ(pwrite(fd.get(), &bytes[victim->file_offset], kPage, static_cast<off_t>(victim->file_offset)),
		  static_cast<ssize_t>(kPage));
	std::vector<unsigned char> page(kPage);
	ASSERT_EQ(pread(m->files[victim->file].get(), page.data(), kPage, static_cast<off_t>(victim->file_offset)),
		  static_cast<ssize_t>(kPage));
	EXPECT_NE(crc32c(page.data(), kPage), victim->crc);
	// The eager path refuses the epoch; epoch 1 still restores.
	Memory out(200, 9);
	EXPECT_EQ(load(2, out).code(), -EBADMSG);
	expect_restores(g, 1);
}

TEST_F(SpareTest, SegmentsALazyRestoreReadsAreDeletedNotRecycled)
{
	Guest g(400);
	full(g, 1);
	for (uint64_t e = 2; e <= 12; e++)
		delta(g, e, e - 1, e * 17, 40);
	auto m = store->map_epoch(6, kLayout, /*holder=*/4242);
	ASSERT_TRUE(m.ok()) << m.message();
	EXPECT_EQ(open_segments::count(), 6u);
	const Memory before = materialise(*m, 400);
	EXPECT_TRUE(before.ram == g.want[6].first);
	// Retention retires 1..9 (base at 10); 1..6 are held: deleted, not spares.
	auto cs = store->apply_retention(RetentionPolicy{3, 1, 0});
	ASSERT_TRUE(cs.ok()) << cs.message();
	EXPECT_EQ(store->spare_files().size(), 3u);	// 7, 8, 9 only
	for (uint64_t e = 13; e <= 20; e++)
		delta(g, e, e - 1, e * 5, 40);	// new epochs go over the spares
	// The held files still read as epoch 6's pages, crc for crc.
	const Memory after = materialise(*m, 400);
	EXPECT_TRUE(after.ram == g.want[6].first);
	EXPECT_TRUE(after.bios == g.want[6].second);
	open_segments::release(4242);
	EXPECT_EQ(open_segments::count(), 0u);
}

TEST_F(ChainTest, PinnedEpochKeepsItsChainThroughRetentionAndCompaction)
{
	Guest g(300);
	full(g, 1);
	for (uint64_t e = 2; e <= 20; e++)
		delta(g, e, e - 1, e * 17, 25);
	ASSERT_TRUE(add_pin(store->vm_dir(), "child-1", 5).ok());
	EXPECT_EQ(pinned_epochs(store->vm_dir()), (std::set<uint64_t>{5}));
	auto cs = store->apply_retention(RetentionPolicy{5, 1, 0});
	ASSERT_TRUE(cs.ok()) << cs.message();
	auto v = views();
	for (uint64_t e = 1; e <= 5; e++)
		EXPECT_TRUE(v.count(e)) << "epoch " << e << " of the pinned chain was deleted";
	EXPECT_TRUE(v[5].restorable);
	expect_restores(g, 5);
	for (uint64_t e = 16; e <= 20; e++)
		expect_restores(g, e);
	EXPECT_FALSE(v.count(10));	// unpinned, unretained: gone
	// Unpinned, the old chain goes.
	ASSERT_TRUE(remove_pin(store->vm_dir(), "child-1").ok());
	ASSERT_TRUE(store->apply_retention(RetentionPolicy{5, 1, 0}).ok());
	EXPECT_FALSE(views().count(5));
	// A pin file that does not verify keeps everything.
	ASSERT_TRUE(add_pin(store->vm_dir(), "child-2", 17).ok());
	auto pin = store->vm_dir() + "/pins/child-2";
	auto b = test::read_file(pin);
	b.back() ^= 1;
	test::write_file(pin, b);
	EXPECT_EQ(pinned_epochs(store->vm_dir()).count(UINT64_MAX), 1u);
	for (uint64_t e = 21; e <= 30; e++)
		delta(g, e, e - 1, e * 3, 10);
	auto keep = store->apply_retention(RetentionPolicy{2, 1, 0});
	ASSERT_TRUE(keep.ok());
	EXPECT_EQ(keep->removed, 0u);
}

TEST(Branch, RecordRoundTripAndRejectsDamage)
{
	test::TempDir d;
	auto none = load_branch(d.path());
	ASSERT_TRUE(none.ok());
	EXPECT_FALSE(none->has_value());
	ASSERT_TRUE(save_branch(d.path(), {"parent-vm", 42}).ok());
	auto b = load_branch(d.path());
	ASSERT_TRUE(b.ok()) << b.message();
	ASSERT_TRUE(b->has_value());
	EXPECT_EQ((*b)->parent_vm, "parent-vm");
	EXPECT_EQ((*b)->parent_epoch, 42u);
	auto bytes = test::read_file(d.path() + "/branch");
	bytes[bytes.size() - 2] ^= 1;	// a digit of the epoch
	test::write_file(d.path() + "/branch", bytes);
	EXPECT_EQ(load_branch(d.path()).code(), -EBADMSG);
	EXPECT_FALSE(save_branch(d.path(), {"../x", 1}).ok());
	EXPECT_FALSE(add_pin(d.path(), "bad/name", 1).ok());
}

TEST(Rewind, EachRestoreOfAnOlderEpochStartsATimeline)
{
	auto current = [](const std::vector<Rewind> &rw, uint64_t e) { return abandoned_by(rw, e) == nullptr; };
	// 1..100, restore 50: 51..100 abandoned; 101.. the new timeline.
	std::vector<Rewind> rw{{50, 100}};
	EXPECT_TRUE(current(rw, 1));
	EXPECT_TRUE(current(rw, 50));
	EXPECT_FALSE(current(rw, 51));
	EXPECT_FALSE(current(rw, 100));
	EXPECT_EQ(abandoned_by(rw, 100)->to, 50u);
	EXPECT_TRUE(current(rw, 101));
	// ... wrote 101..105, restore 103: 104, 105 abandoned, 103's ancestry
	// is 101..103 and 1..50 (not 51..100).
	rw.push_back({103, 105});
	EXPECT_TRUE(current(rw, 103));
	EXPECT_TRUE(current(rw, 101));
	EXPECT_FALSE(current(rw, 104));
	EXPECT_FALSE(current(rw, 100));
	EXPECT_TRUE(current(rw, 50));
	EXPECT_TRUE(current(rw, 106));
	// ... then restore 80, written before the first rewind: its ancestry
	// is 1..80 of the first timeline; 81..105 abandoned.
	rw.push_back({80, 105});
	EXPECT_TRUE(current(rw, 80));
	EXPECT_TRUE(current(rw, 60));
	EXPECT_FALSE(current(rw, 81));
	EXPECT_FALSE(current(rw, 101));
	EXPECT_TRUE(current(rw, 106));
	// ... then the abandoned newest (105) again: 101..105 and 1..50 current.
	rw.push_back({105, 105});
	EXPECT_TRUE(current(rw, 105));
	EXPECT_TRUE(current(rw, 103));
	EXPECT_TRUE(current(rw, 104));	// 105 was written after 104
	EXPECT_FALSE(current(rw, 80));
	EXPECT_TRUE(current(rw, 50));
	EXPECT_TRUE(current({}, 7));
}

TEST(Rewind, RecordRoundTripRejectsDamageAndIsReplacedWhenDamaged)
{
	test::TempDir d;
	auto none = load_rewinds(d.path());
	ASSERT_TRUE(none.ok());
	EXPECT_TRUE(none->empty());
	ASSERT_TRUE(add_rewind(d.path(), {5, 9}).ok());
	ASSERT_TRUE(add_rewind(d.path(), {9, 9}).ok());
	EXPECT_FALSE(add_rewind(d.path(), {9, 8}).ok());
	EXPECT_FALSE(add_rewind(d.path(), {0, 8}).ok());
	auto rw = load_rewinds(d.path());
	ASSERT_TRUE(rw.ok()) << rw.message();
	ASSERT_EQ(rw->size(), 2u);
	EXPECT_EQ((*rw)[0].to, 5u);
	EXPECT_EQ((*rw)[1].newest, 9u);
	auto bytes = test::read_file(d.path() + "/rewinds");
	bytes[bytes.size() - 2] ^= 1;	// a digit
	test::write_file(d.path() + "/rewinds", bytes);
	EXPECT_EQ(load_rewinds(d.path()).code(), -EBADMSG);
	ASSERT_TRUE(add_rewind(d.path(), {7, 12}).ok());	// replaces the damaged file
	rw = load_rewinds(d.path());
	ASSERT_TRUE(rw.ok()) << rw.message();
	ASSERT_EQ(rw->size(), 1u);
	EXPECT_EQ((*rw)[0].to, 7u);
}

TEST_F(ChainTest, RestoreWithoutAnEpochStaysOnTheTimelineOfTheLastRestore)
{
	Guest g(300);
	full(g, 1);
	for (uint64_t e = 2; e <= 12; e++)
		delta(g, e, e - 1, e * 17, 25);
	// Restored to 6 while 12 was the newest (what slsvirtd records).
	ASSERT_TRUE(add_rewind(store->vm_dir(), {6, 12}).ok());
	auto v = views();
	EXPECT_EQ(v[6].rewound_to, 0u);
	EXPECT_EQ(v[7].rewound_to, 6u);
	EXPECT_EQ(v[12].rewound_to, 6u);
	EXPECT_TRUE(v[12].restorable);	// still there for --epoch
	EXPECT_EQ(store->newest_restorable(ScanDepth::full)->epoch, 6u);
	Memory out(300, 99);
	auto lr = load(0, out);
	ASSERT_TRUE(lr.ok()) << lr.message();
	EXPECT_EQ(lr->info.epoch, 6u);
	EXPECT_TRUE(out.ram == g.want[6].first);
	expect_restores(g, 12);	// explicitly
	const std::vector<RamBlockDesc> kLayout300{{"pc.ram", 300 * kPage}, {"pc.bios", 16 * kPage}};
	auto m = store->map_epoch(0, kLayout300, 0);
	ASSERT_TRUE(m.ok()) << m.message();
	EXPECT_EQ(m->info.epoch, 6u);
	// Retention keeps 6 (and its chain) while the new timeline has no epoch.
	EXPECT_EQ(timeline_pins(store->vm_dir(), *store->catalog(ScanDepth::structure)), (std::set<uint64_t>{6}));
	ASSERT_TRUE(store->apply_retention(RetentionPolicy{3, 1, 0}).ok());
	v = views();
	for (uint64_t e = 1; e <= 6; e++)
		EXPECT_TRUE(v.count(e)) << "epoch " << e << " (the restored one's chain) was deleted";
	expect_restores(g, 6);
	// The VM goes on from 6: its epochs come after 12.
	g.m.ram = g.want[6].first;
	g.m.bios = g.want[6].second;
	delta(g, 13, 6, 5, 20);
	EXPECT_EQ(store->newest_restorable(ScanDepth::full)->epoch, 13u);
	lr = load(0, out);
	ASSERT_TRUE(lr.ok()) << lr.message();
	EXPECT_EQ(lr->info.epoch, 13u);
	EXPECT_TRUE(out.ram == g.want[13].first);
	EXPECT_TRUE(timeline_pins(store->vm_dir(), *store->catalog(ScanDepth::structure)).empty());
	// A damaged rewinds file: ignored by readers (12 is newest again),
	// and retention keeps everything.
	auto bytes = test::read_file(store->vm_dir() + "/rewinds");
	bytes.back() ^= 1;
	test::write_file(store->vm_dir() + "/rewinds", bytes);
	EXPECT_EQ(views()[12].rewound_to, 0u);
	EXPECT_EQ(timeline_pins(store->vm_dir(), *store->catalog(ScanDepth::structure)).count(UINT64_MAX), 1u);
}

TEST_F(ChainTest, NoEpochOnTheCurrentTimelineSaysWhereTheOthersAre)
{
	Guest g(300);
	full(g, 1);
	full(g, 2);
	delta(g, 3, 2, 40, 25);
	ASSERT_TRUE(add_rewind(store->vm_dir(), {1, 3}).ok());
	ASSERT_EQ(unlink(store->segment_path(1).c_str()), 0);	// the restored epoch is gone
	Memory out(300, 99);
	auto lr = load(0, out);
	ASSERT_FALSE(lr.ok());
	EXPECT_NE(lr.message().find("2 restorable epoch(s) on other timelines (newest 3)"), std::string::npos)
		<< lr.message();
	auto nr = store->newest_restorable(ScanDepth::structure);
	ASSERT_FALSE(nr.ok());
	EXPECT_NE(nr.message().find("other timelines"), std::string::npos) << nr.message();
	expect_restores(g, 3);	// by number
}
