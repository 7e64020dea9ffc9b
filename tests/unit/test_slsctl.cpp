// slsctl's store-side subcommands (ls, verify, restore's report) as a user
// runs them, on a store written by the real writer. QEMU is not needed.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "slsvirt/store.hpp"
#include "test_util.hpp"

using namespace slsvirt;

namespace {

struct CmdResult {
	int status;
	std::string out;
};

CmdResult slsctl(const std::string &args)
{
	const char *bin = getenv("SLSCTL");
	std::string cmd = std::string(bin ? bin : "slsctl") + " " + args + " 2>&1";
	FILE *p = popen(cmd.c_str(), "r");
	CmdResult r{-1, {}};
	if (!p)
		return r;
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
		r.out.append(buf, n);
	int st = pclose(p);
	r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return r;
}

class SlsctlTest : public ::testing::Test {
protected:
	void SetUp() override
	{
		if (!getenv("SLSCTL"))
			GTEST_FAIL() << "SLSCTL (path of the slsctl binary) is not set; run through meson test";
		auto s = Store::open(dir.path() + "/store", "vm", true);
		ASSERT_TRUE(s.ok());
		std::vector<unsigned char> ram(64 * 4096);
		test::fill_random(ram.data(), ram.size() / 2, 1);
		std::vector<RamBlockMem> blocks = {{"pc.ram", ram.size(), ram.data()}};
		for (uint64_t e = 1; e <= 3; e++)
			ASSERT_TRUE(s->write_epoch({e, e - 1, 1, 1700000000000000000ull, 1000}, blocks, {}).ok());
		store.emplace(std::move(*s));
		opts = " --store-root " + dir.path() + "/store --run-dir " + dir.path() + "/run";
	}
	test::TempDir dir;
	std::optional<Store> store;
	std::string opts;
};

} // namespace

TEST_F(SlsctlTest, EverySubcommandHasHelp)
{
	for (const char *c : {"run", "checkpoint", "restore", "ls", "verify", "stats", "mem"}) {
		CmdResult r = slsctl(std::string(c) + " --help");
		EXPECT_EQ(r.status, 0) << c;
		EXPECT_NE(r.out.find("usage: slsctl"), std::string::npos) << c << ": " << r.out;
		EXPECT_NE(r.out.find("--store-root"), std::string::npos) << c;
	}
	EXPECT_EQ(slsctl("--help").status, 0);
	EXPECT_NE(slsctl("frobnicate").status, 0);
	EXPECT_NE(slsctl("ls vm --bogus").status, 0);
}

// slsctl mem: bad sizes and option combinations are refused before QMP is
// touched; a VM that does not run is a clear error, not a hang.
TEST_F(SlsctlTest, MemArguments)
{
	for (const char *bad : {"--target 12X", "--target -5M", "--target M", "--ceiling 99999999999T",
				"--wait 5", "--target 1G --wait 0"}) {
		CmdResult r = slsctl(std::string("mem vm ") + bad + opts);
		EXPECT_EQ(r.status, 1) << bad << ": " << r.out;
		EXPECT_NE(r.out.find("slsctl: error:"), std::string::npos) << bad << ": " << r.out;
	}
	CmdResult r = slsctl("mem vm --target 512M" + opts);
	EXPECT_EQ(r.status, 1) << r.out;
	EXPECT_NE(r.out.find(".qmp"), std::string::npos) << r.out;
	EXPECT_NE(slsctl("mem" + opts).status, 0);
}

TEST_F(SlsctlTest, LsAndVerify)
{
	CmdResult r = slsctl("ls vm" + opts);
	EXPECT_EQ(r.status, 0) << r.out;
	EXPECT_NE(r.out.find("EPOCH"), std::string::npos);
	EXPECT_NE(r.out.find("valid"), std::string::npos);
	r = slsctl("verify vm" + opts);
	EXPECT_EQ(r.status, 0) << r.out;
	EXPECT_NE(r.out.find("3 checked, 0 bad"), std::string::npos) << r.out;

	// Corrupt one page of epoch 3: verify fails, naming the epoch.
	auto b = test::read_file(store->segment_path(3));
	b[store->scan(3, ScanDepth::structure).segment_bytes - 3 * 4096] ^= 1;	// inside the last PAGES record's data
	test::write_file(store->segment_path(3), b);
	r = slsctl("verify vm" + opts);
	EXPECT_EQ(r.status, 1) << r.out;
	EXPECT_NE(r.out.find("epoch 3: corrupt"), std::string::npos) << r.out;
	EXPECT_EQ(slsctl("verify vm --epoch 2" + opts).status, 0);
	EXPECT_EQ(slsctl("verify vm --epoch 9" + opts).status, 1);
	EXPECT_NE(slsctl("ls ../x" + opts).status, 0);
}

TEST_F(SlsctlTest, RestoreReportsIgnoredEpochsAndRefusesWithoutValid)
{
	// Epoch 3 torn (no commit record), epoch 2 corrupt: restore picks 1.
	test::truncate_file(store->segment_path(3), 2 * 4096);	// after RAM_LAYOUT
	auto b = test::read_file(store->segment_path(2));
	b[0] ^= 1;
	test::write_file(store->segment_path(2), b);
	CmdResult r = slsctl("restore vm" + opts);	// no vm.conf: fails after the report
	EXPECT_NE(r.out.find("epoch 3: torn (no commit record), ignored"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("epoch 2: corrupt"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("restoring epoch 1"), std::string::npos) << r.out;
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.out.find("vm.conf"), std::string::npos) << r.out;

	b = test::read_file(store->segment_path(1));
	b[4096 + 8] ^= 1;
	test::write_file(store->segment_path(1), b);
	r = slsctl("restore vm" + opts);
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.out.find("no valid epoch"), std::string::npos) << r.out;
	r = slsctl("restore vm --epoch 2" + opts);
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.out.find("epoch 2 is corrupt"), std::string::npos) << r.out;
}

TEST_F(SlsctlTest, LsVerifyAndRestoreWithChains)
{
	// Epochs 1..3 full (SetUp), 4..6 deltas on 3.
	std::vector<unsigned char> ram(64 * 4096);
	test::fill_random(ram.data(), ram.size(), 9);
	std::vector<RamBlockMem> blocks = {{"pc.ram", ram.size(), ram.data()}};
	for (uint64_t e = 4; e <= 6; e++) {
		std::vector<PageRef> pages = {{0, e * 4096}, {0, 40 * 4096}};
		ASSERT_TRUE(store->write_delta_epoch({e, e - 1, 0, 1700000000000000000ull, 1000}, blocks, pages, {}).ok());
	}
	CmdResult r = slsctl("ls vm" + opts);
	EXPECT_EQ(r.status, 0) << r.out;
	EXPECT_NE(r.out.find("KIND"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("RESTORABLE"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("delta  5 "), std::string::npos) << r.out;	// epoch 6: delta, parent 5
	EXPECT_NE(r.out.find("chain of 4 from epoch 3"), std::string::npos) << r.out;
	r = slsctl("verify vm" + opts);
	EXPECT_EQ(r.status, 0) << r.out;
	EXPECT_NE(r.out.find("epoch 6: ok (delta, chain of 4 from epoch 3)"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("newest restorable epoch: 6"), std::string::npos) << r.out;

	// Corrupt a page of delta 5: 5 and 6 not restorable, with the reason; newest is 4.
	auto b = test::read_file(store->segment_path(5));
	b[store->scan(5, ScanDepth::structure).segment_bytes - 4096 - 4096 - 1] ^= 1;	// last data page, before DEVSTATE and COMMIT
	test::write_file(store->segment_path(5), b);
	r = slsctl("verify vm" + opts);
	EXPECT_EQ(r.status, 1) << r.out;
	EXPECT_NE(r.out.find("epoch 5: corrupt"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("epoch 6: not restorable: parent epoch 5 is not restorable"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("newest restorable epoch: 4"), std::string::npos) << r.out;
	r = slsctl("restore vm" + opts);	// no vm.conf: fails after the report
	EXPECT_NE(r.out.find("restoring epoch 4 (delta"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("epoch 6: not restorable: chain segment 5 is corrupt"), std::string::npos) << r.out;
	r = slsctl("restore vm --epoch 6" + opts);
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.out.find("epoch 6 is not restorable: chain segment 5"), std::string::npos) << r.out;
	r = slsctl("restore vm --epoch 2" + opts);
	EXPECT_NE(r.out.find("restoring epoch 2 (full"), std::string::npos) << r.out;

	// A missing link shows in ls with its reason.
	ASSERT_EQ(unlink(store->segment_path(4).c_str()), 0);
	r = slsctl("ls vm" + opts);
	EXPECT_NE(r.out.find("parent epoch 4 is missing"), std::string::npos) << r.out;
}

TEST_F(SlsctlTest, RunHelpListsPeriodMs)
{
	CmdResult r = slsctl("run --help");
	EXPECT_NE(r.out.find("--period-ms"), std::string::npos) << r.out;
	r = slsctl("run vm --period-ms x" + opts);
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.out.find("--period-ms"), std::string::npos) << r.out;
}
