// Store: real io_uring writes into a temp dir, then every way to break a segment.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstring>
#include <filesystem>

#include "slsvirt/crc32c.hpp"
#include "slsvirt/store.hpp"
#include "slsvirt/store_format.hpp"
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
		off += fmt::record_span(h.payload_length);
	}
	return out;
}

void rewrite_record_header(std::vector<unsigned char> &b, uint64_t off, void (*edit)(fmt::RecordHeader &))
{
	fmt::RecordHeader h;
	memcpy(&h, &b[off], sizeof(h));
	edit(h);
	h.header_crc = crc32c(&h, offsetof(fmt::RecordHeader, header_crc));
	memcpy(&b[off], &h, sizeof(h));
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
	EXPECT_EQ(static_cast<uint64_t>(sb.st_size), st.file_bytes);
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
	fh.format_version = 2;
	fh.header_crc = crc32c(&fh, offsetof(fmt::FileHeader, header_crc));
	memcpy(b.data(), &fh, sizeof(fh));
	test::write_file(p, b);
	si = store->scan(2, ScanDepth::structure);
	EXPECT_EQ(si.status, SegmentStatus::corrupt);
	EXPECT_NE(si.detail.find("version 2"), std::string::npos) << si.detail;

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
	for (uint64_t cut : cuts) {
		if (cut >= orig.size())
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

	// Trailing garbage after COMMIT.
	b = orig;
	b.resize(b.size() + 4096, 1);
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
	std::vector<uint64_t> valid;
	for (uint64_t e = 1; e <= 12; e++) {
		write(e, m, dev);
		valid.push_back(e);
		ASSERT_TRUE(store->apply_retention(valid, kDefaultRetain).ok());
	}
	auto list = store->list(ScanDepth::structure);
	ASSERT_TRUE(list.ok());
	ASSERT_EQ(list->size(), 8u);
	EXPECT_EQ(list->front().epoch, 5u);
	EXPECT_EQ(list->back().epoch, 12u);
	for (const auto &s : *list)
		EXPECT_EQ(s.status, SegmentStatus::valid);
	EXPECT_EQ(valid.size(), 8u);
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
