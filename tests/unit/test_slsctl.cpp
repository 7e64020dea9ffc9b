// slsctl's store-side subcommands (ls, verify, restore's report) as a user
// runs them, on a store written by the real writer. QEMU is not needed.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

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
	for (const char *c : {"run", "checkpoint", "restore", "ls", "verify", "stats", "prepare", "mem", "clone", "working-set"}) {
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
	// Eager: every page verifies before the choice. No vm.conf: fails after the report.
	r = slsctl("restore vm --eager" + opts);
	EXPECT_NE(r.out.find("restoring epoch 4 (delta"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("epoch 6: not restorable: chain segment 5 is corrupt"), std::string::npos) << r.out;
	r = slsctl("restore vm --eager --epoch 6" + opts);
	EXPECT_EQ(r.status, 1);
	EXPECT_NE(r.out.find("epoch 6 is not restorable: chain segment 5"), std::string::npos) << r.out;
	r = slsctl("restore vm --eager --epoch 2" + opts);
	EXPECT_NE(r.out.find("restoring epoch 2 (full"), std::string::npos) << r.out;
	// Lazy (the default) reads no page data up front: the damaged page is
	// caught when it is loaded (tests/integration/lazy-restore-corrupt-page).
	r = slsctl("restore vm" + opts);
	EXPECT_NE(r.out.find("restoring epoch 6 (delta"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("lazily"), std::string::npos) << r.out;

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

TEST_F(SlsctlTest, LsJsonListsEveryEpoch)
{
	CmdResult r = slsctl("ls vm --json" + opts);
	ASSERT_EQ(r.status, 0) << r.out;
	auto j = nlohmann::json::parse(r.out, nullptr, false);
	ASSERT_TRUE(j.is_array()) << r.out;
	ASSERT_EQ(j.size(), 3u) << r.out;
	for (uint64_t e = 1; e <= 3; e++) {
		const auto &x = j[e - 1];
		EXPECT_EQ(x.value("epoch", 0ull), e);
		EXPECT_TRUE(x.value("restorable", false)) << x.dump();
		EXPECT_EQ(x.value("bytes", 0ull), store->scan(e, ScanDepth::structure).file_size) << x.dump();
		EXPECT_FALSE(x.contains("why")) << x.dump();
	}
	// A broken epoch says why, as the table does.
	ASSERT_EQ(truncate(store->segment_path(3).c_str(), 100), 0);
	r = slsctl("ls vm --json" + opts);
	j = nlohmann::json::parse(r.out, nullptr, false);
	ASSERT_TRUE(j.is_array()) << r.out;
	EXPECT_FALSE(j.back().value("restorable", true)) << r.out;
	EXPECT_TRUE(j.back().contains("why")) << r.out;
}

// What the libvirt hook calls: slsvirtd on demand (with --retain), the
// store created, the device arguments printed one per line.
TEST_F(SlsctlTest, PrepareStartsHostdAndPrintsTheDevice)
{
	const char *hostd = getenv("SLSVIRTD");
	ASSERT_TRUE(hostd) << "SLSVIRTD (path of slsvirtd) is not set; run through meson test";
	const std::string sock = dir.path() + "/run/slsvirtd.sock";
	setenv("SLSVIRT_HOSTD", hostd, 1);
	CmdResult r = slsctl("prepare vm2 --period-ms 10 --retain 5" + opts);
	ASSERT_EQ(r.status, 0) << r.out;
	EXPECT_EQ(r.out, "-device\nslsvirt-pci,id=sls0,vm=vm2,socket=" + sock + ",period-ms=10\n");
	struct stat st;
	EXPECT_EQ(stat((dir.path() + "/store/vm2").c_str(), &st), 0) << "store not created";
	pid_t pid = 0;
	for (int i = 0; i < 200 && pid <= 0; i++) {	// the daemon writes its pidfile as it detaches
		if (access((dir.path() + "/run/slsvirtd.pid").c_str(), R_OK) == 0) {
			auto t = test::read_file(dir.path() + "/run/slsvirtd.pid");
			pid = static_cast<pid_t>(atol(std::string(t.begin(), t.end()).c_str()));
		}
		if (pid <= 0)
			usleep(10000);
	}
	ASSERT_GT(pid, 0) << "no slsvirtd pidfile";
	auto cmdline = test::read_file("/proc/" + std::to_string(pid) + "/cmdline");
	std::string c(cmdline.begin(), cmdline.end());
	EXPECT_NE(c.find(std::string("--retain") + '\0' + "5"), std::string::npos);
	// A second prepare finds it answering and starts no other.
	r = slsctl("prepare vm3" + opts);
	EXPECT_EQ(r.status, 0) << r.out;
	EXPECT_EQ(r.out, "-device\nslsvirt-pci,id=sls0,vm=vm3,socket=" + sock + "\n");
	kill(pid, SIGTERM);	// it is not our child: gone (or a zombie no one reaps here) is enough
	for (int i = 0; i < 100; i++) {
		std::string stat_path = "/proc/" + std::to_string(pid) + "/stat";
		if (access(stat_path.c_str(), R_OK) != 0)
			break;
		auto st_txt = test::read_file(stat_path);
		std::string t(st_txt.begin(), st_txt.end());
		auto rp = t.rfind(')');
		if (rp != std::string::npos && rp + 2 < t.size() && t[rp + 2] == 'Z')
			break;
		usleep(20000);
	}

	EXPECT_EQ(slsctl("prepare vm2 --period-ms 5000" + opts).status, 1);
	EXPECT_EQ(slsctl("prepare vm2 --retain x" + opts).status, 1);
	EXPECT_EQ(slsctl("prepare ../vm" + opts).status, 1);
	unsetenv("SLSVIRT_HOSTD");
}
