// slsvirtd end to end over a real unix socket with a memfd staging area:
// in-process Server for most cases, the slsvirtd binary for crash faults.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

#include "slsvirt/crc32c.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/proto_codec.hpp"
#include "slsvirt/server.hpp"
#include "slsvirt/store.hpp"
#include "test_util.hpp"

using namespace slsvirt;
using namespace slsvirt::proto;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kRamLen = 300 * kPage;
constexpr uint64_t kBiosLen = 16 * kPage;
constexpr uint64_t kStaging = kRamLen + kBiosLen + 4 * kPage;	// a gap at the end

// An engine stand-in: staging memfd + a connection speaking proto.h.
class Engine {
public:
	Engine(const std::string &sock, std::string vm) : vm_(std::move(vm))
	{
		memfd_.reset(memfd_create("staging", MFD_CLOEXEC | MFD_ALLOW_SEALING));
		EXPECT_TRUE(memfd_.valid());
		EXPECT_EQ(ftruncate(memfd_.get(), kStaging), 0);
		auto m = Mapping::map_shared(memfd_.get(), kStaging);
		EXPECT_TRUE(m.ok());
		map_ = std::move(*m);
		fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		sockaddr_un a{};
		a.sun_family = AF_UNIX;
		strncpy(a.sun_path, sock.c_str(), sizeof(a.sun_path) - 1);
		connected_ = connect(fd_.get(), reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0;
	}

	bool connected() const { return connected_; }
	unsigned char *ram() { return map_.data(); }
	unsigned char *bios() { return map_.data() + kRamLen; }

	Hello hello_msg() const
	{
		return Hello{1, 1, vm_, kStaging, {{"pc.ram", kRamLen, 0}, {"pc.bios", kBiosLen, kRamLen}}};
	}

	bool send_raw(const Bytes &b, int pass_fd = -1)
	{
		struct iovec iov = {const_cast<unsigned char *>(b.data()), b.size()};
		alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
		struct msghdr mh = {};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (pass_fd >= 0) {
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
		}
		return sendmsg(fd_.get(), &mh, MSG_NOSIGNAL) == static_cast<ssize_t>(b.size());
	}

	// Reads one message; nullopt on EOF/error (connection closed).
	std::optional<std::pair<Header, Bytes>> recv_msg()
	{
		unsigned char hb[kHeaderSize];
		if (!read_full(fd_.get(), hb, sizeof(hb), "recv").ok())
			return std::nullopt;
		auto h = decode_header(hb, 1);
		EXPECT_TRUE(h.ok()) << h.message();
		if (!h)
			return std::nullopt;
		Bytes p(h->length);
		if (h->length && !read_full(fd_.get(), p.data(), p.size(), "recv").ok())
			return std::nullopt;
		EXPECT_TRUE(check_payload(*h, p).ok());
		return std::make_pair(*h, std::move(p));
	}

	// Sends `msg`, reads one reply of type `want` and decodes it; nullopt
	// when the connection closed, the reply has another type or fails to decode.
	template <typename Decode>
	auto request(const Bytes &msg, uint16_t want, Decode decode, int pass_fd = -1)
		-> std::optional<std::remove_cvref_t<decltype(*decode(Bytes{}))>>
	{
		if (!send_raw(msg, pass_fd))
			return std::nullopt;
		auto m = recv_msg();
		if (!m || m->first.type != want)
			return std::nullopt;
		auto a = decode(m->second);
		if (!a)
			return std::nullopt;
		return *a;
	}

	std::optional<HelloAck> hello(bool pass_fd = true)
	{
		return request(encode_hello(hello_msg(), ++seq_), SLS_MSG_HELLO_ACK, decode_hello_ack,
			       pass_fd ? memfd_.get() : -1);
	}

	// A delta epoch: `pages` are staging page indices (as the engine sends them).
	std::optional<EpochAck> delta(uint64_t e, uint64_t parent, const std::vector<uint64_t> &pages,
				      const std::vector<unsigned char> &dev = {})
	{
		return request(encode_epoch({e, parent, 0, 123, 456, dev, pages}, ++seq_), SLS_MSG_EPOCH_ACK,
			       decode_epoch_ack);
	}

	std::optional<EpochAck> epoch(uint64_t e, const std::vector<unsigned char> &dev)
	{
		return request(encode_epoch({e, e - 1, SLS_EPOCH_F_FULL, 123, 456, dev}, ++seq_), SLS_MSG_EPOCH_ACK,
			       decode_epoch_ack);
	}

	struct Restored {
		uint64_t epoch;
		int32_t status;
		std::string message;
		std::vector<unsigned char> devstate;
	};
	std::optional<Restored> restore(uint64_t e)
	{
		auto a = request(encode_restore({e}, ++seq_), SLS_MSG_RESTORE_ACK, decode_restore_ack);
		if (!a)
			return std::nullopt;
		return Restored{a->epoch, a->status, a->message, {a->devstate.begin(), a->devstate.end()}};
	}

	// True once the daemon has closed this connection.
	bool closed_by_peer()
	{
		unsigned char b;
		struct timeval tv = {10, 0};
		setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		return recv(fd_.get(), &b, 1, 0) == 0;
	}

	uint64_t next_seq() { return ++seq_; }

private:
	std::string vm_;
	UniqueFd memfd_, fd_;
	Mapping map_;
	bool connected_ = false;
	uint64_t seq_ = 0;
};

void fill_guest(Engine &e, uint64_t seed)
{
	memset(e.ram(), 0, kRamLen + kBiosLen);
	for (uint64_t p = 0; p < kRamLen / kPage; p += 2)
		test::fill_random(e.ram() + p * kPage, kPage, seed + p);
	test::fill_random(e.bios(), kPage, seed);
}

std::vector<unsigned char> snapshot(Engine &e)
{
	return std::vector<unsigned char>(e.ram(), e.ram() + kRamLen + kBiosLen);
}

class ServerTest : public ::testing::Test {
protected:
	void start(const std::string &faults = "", unsigned retain = 8, const std::string &store_root = "")
	{
		ServerConfig cfg;
		cfg.socket_path = sock();
		cfg.store_root = store_root.empty() ? root() : store_root;
		cfg.retain = retain;
		cfg.compact_min = 4;
		cfg.compact_bytes_pct = 0;
		cfg.compact_interval_ms = 20;
		auto f = FaultPlan::parse(faults);
		ASSERT_TRUE(f.ok());
		cfg.faults = *f;
		server = std::make_unique<Server>(cfg);
		Status s = server->start_background();
		ASSERT_TRUE(s.ok()) << s.message();
	}
	void TearDown() override
	{
		if (server)
			server->stop();
	}
	std::string sock() const { return dir.path() + "/run/slsvirtd.sock"; }
	std::string root() const { return dir.path() + "/store"; }
	uint64_t newest(const std::string &vm)
	{
		auto st = Store::open(root(), vm, true);
		auto n = st->newest_valid();
		return n.ok() ? n->epoch : 0;
	}

	test::TempDir dir;
	std::unique_ptr<Server> server;
};

} // namespace

TEST_F(ServerTest, HelloEpochRestoreRoundTrip)
{
	start();
	struct stat st;
	ASSERT_EQ(stat(sock().c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 0777, 0600u);
	ASSERT_EQ(stat((dir.path() + "/run").c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 0777, 0700u);

	Engine e(sock(), "vm1");
	ASSERT_TRUE(e.connected());	// SO_PEERCRED: same uid is accepted
	auto ha = e.hello();
	ASSERT_TRUE(ha);
	EXPECT_EQ(ha->status, 0) << ha->message;
	EXPECT_EQ(ha->durable_epoch, 0u);

	fill_guest(e, 1);
	const auto want = snapshot(e);
	std::vector<unsigned char> dev(777);
	test::fill_random(dev.data(), dev.size(), 3);
	auto ack = e.epoch(1, dev);
	ASSERT_TRUE(ack);
	EXPECT_EQ(ack->status, 0) << ack->message;
	EXPECT_EQ(ack->epoch, 1u);
	EXPECT_GT(ack->bytes_written, 150 * kPage);
	EXPECT_EQ(newest("vm1"), 1u);

	fill_guest(e, 2);	// the guest moves on
	auto ack2 = e.epoch(2, {});
	ASSERT_TRUE(ack2);
	EXPECT_EQ(ack2->status, 0);
	memset(e.ram(), 0xEE, kRamLen + kBiosLen);	// scribble
	auto r = e.restore(1);
	ASSERT_TRUE(r);
	EXPECT_EQ(r->status, 0) << r->message;
	EXPECT_EQ(r->epoch, 1u);
	EXPECT_EQ(r->devstate, dev);
	EXPECT_TRUE(snapshot(e) == want);	// bytes restored == bytes written

	// Restoring 1 left 2 on another timeline: "newest" is 1 now (a VM that
	// crashes right after a restore of an older epoch comes back to it),
	// until 2 is restored explicitly.
	auto r0 = e.restore(0);
	ASSERT_TRUE(r0);
	EXPECT_EQ(r0->epoch, 1u);
	auto r2 = e.restore(2);
	ASSERT_TRUE(r2);
	EXPECT_EQ(r2->epoch, 2u);
	EXPECT_TRUE(r2->devstate.empty());
	r0 = e.restore(0);
	ASSERT_TRUE(r0);
	EXPECT_EQ(r0->epoch, 2u);
	auto bad = e.restore(9);
	ASSERT_TRUE(bad);
	EXPECT_LT(bad->status, 0);
	EXPECT_FALSE(bad->message.empty());

	// An epoch that is not newer is refused, and nothing changes.
	auto old = e.epoch(2, {});
	ASSERT_TRUE(old);
	EXPECT_EQ(old->status, -EINVAL);
}

TEST_F(ServerTest, MalformedMessageClosesOnlyThatConnection)
{
	start();
	Engine good(sock(), "good");
	ASSERT_TRUE(good.hello() && true);
	fill_guest(good, 5);

	// Garbage before HELLO.
	Engine g1(sock(), "bad1");
	ASSERT_TRUE(g1.send_raw(Bytes(24, 0x41)));
	EXPECT_TRUE(g1.closed_by_peer());

	// A valid HELLO, then an EPOCH with a bad crc: closed, store untouched.
	Engine g2(sock(), "bad2");
	auto ha = g2.hello();
	ASSERT_TRUE(ha);
	ASSERT_EQ(ha->status, 0);
	fill_guest(g2, 6);
	Bytes m = encode_epoch({1, 0, SLS_EPOCH_F_FULL, 0, 0, std::vector<unsigned char>(100, 1)}, g2.next_seq());
	m.back() ^= 1;
	ASSERT_TRUE(g2.send_raw(m));
	EXPECT_TRUE(g2.closed_by_peer());
	EXPECT_EQ(newest("bad2"), 0u);

	// A header claiming an oversized payload.
	Engine g3(sock(), "bad3");
	ASSERT_TRUE(g3.hello());
	Bytes big = encode_restore({0}, g3.next_seq());
	uint32_t len = SLS_PROTO_MAX_PAYLOAD + 1;
	memcpy(big.data() + offsetof(sls_msg_hdr, length), &len, 4);
	ASSERT_TRUE(g3.send_raw(big));
	EXPECT_TRUE(g3.closed_by_peer());

	// Wrong sequence number.
	Engine g4(sock(), "bad4");
	ASSERT_TRUE(g4.hello());
	ASSERT_TRUE(g4.send_raw(encode_restore({0}, 77)));
	EXPECT_TRUE(g4.closed_by_peer());

	// The well-behaved VM never noticed.
	auto ack = good.epoch(1, {1, 2, 3});
	ASSERT_TRUE(ack);
	EXPECT_EQ(ack->status, 0) << ack->message;
	EXPECT_EQ(newest("good"), 1u);
}

TEST_F(ServerTest, HelloRejections)
{
	start();
	Engine nofd(sock(), "nofd");
	auto a = nofd.hello(false);
	ASSERT_TRUE(a);
	EXPECT_LT(a->status, 0);
	EXPECT_NE(a->message.find("fd"), std::string::npos) << a->message;
	EXPECT_TRUE(nofd.closed_by_peer());

	Engine first(sock(), "twice");
	auto a1 = first.hello();
	ASSERT_TRUE(a1);
	EXPECT_EQ(a1->status, 0);
	Engine second(sock(), "twice");
	auto a2 = second.hello();
	ASSERT_TRUE(a2);
	EXPECT_EQ(a2->status, -EBUSY);

	// A staging fd smaller than staging_size.
	Engine small(sock(), "small");
	UniqueFd tiny(memfd_create("tiny", MFD_CLOEXEC));
	ASSERT_EQ(ftruncate(tiny.get(), 4096), 0);
	Bytes h = encode_hello(small.hello_msg(), small.next_seq());
	ASSERT_TRUE(small.send_raw(h, tiny.get()));
	auto m = small.recv_msg();
	ASSERT_TRUE(m);
	auto ack = decode_hello_ack(m->second);
	ASSERT_TRUE(ack.ok());
	EXPECT_EQ(ack->status, -EINVAL);

	// First message not a HELLO.
	Engine nohello(sock(), "nohello");
	ASSERT_TRUE(nohello.send_raw(encode_restore({0}, 1)));
	EXPECT_TRUE(nohello.closed_by_peer());
}

TEST_F(ServerTest, FailWriteGivesFailedAckAndNoVisibleEpoch)
{
	start("fail-write:2,delay-ack-ms:5");
	Engine e(sock(), "fw");
	ASSERT_TRUE(e.hello());
	fill_guest(e, 1);
	const auto want = snapshot(e);
	auto a1 = e.epoch(1, {9});
	ASSERT_TRUE(a1);
	EXPECT_EQ(a1->status, 0);
	fill_guest(e, 2);
	auto a2 = e.epoch(2, {8});
	ASSERT_TRUE(a2);
	EXPECT_EQ(a2->status, -EIO);
	EXPECT_NE(a2->message.find("Input/output error"), std::string::npos) << a2->message;
	EXPECT_EQ(newest("fw"), 1u);
	auto st = Store::open(root(), "fw", false);
	EXPECT_EQ(st->list(ScanDepth::structure)->size(), 1u);
	// The connection goes on: a later epoch succeeds; restore still sees 1 then 3.
	auto r = e.restore(0);
	ASSERT_TRUE(r);
	EXPECT_EQ(r->epoch, 1u);
	EXPECT_TRUE(snapshot(e) == want);
	auto a3 = e.epoch(3, {});
	ASSERT_TRUE(a3);
	EXPECT_EQ(a3->status, 0);
	EXPECT_EQ(newest("fw"), 3u);
}

namespace {

pid_t spawn_daemon(const std::string &sock, const std::string &root, const std::string &fault,
		   std::vector<std::string> extra = {})
{
	const char *bin = getenv("SLSVIRTD");
	if (!bin || !*bin)
		return -1;
	std::vector<std::string> args = {bin, "--socket", sock, "--store-root", root, "--fault", fault};
	args.insert(args.end(), extra.begin(), extra.end());
	pid_t pid = fork();
	if (pid == 0) {
		std::vector<char *> av;
		for (auto &a : args)
			av.push_back(a.data());
		av.push_back(nullptr);
		execv(av[0], av.data());
		_exit(127);
	}
	// Wait until the new daemon answers (a stale socket file may still exist).
	for (int i = 0; i < 500; i++) {
		UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		sockaddr_un a{};
		a.sun_family = AF_UNIX;
		strncpy(a.sun_path, sock.c_str(), sizeof(a.sun_path) - 1);
		if (connect(fd.get(), reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0)
			break;
		usleep(10000);
	}
	return pid;
}

// Kills a daemon the test started if the test ends early (a failed ASSERT).
struct DaemonGuard {
	pid_t pid = -1;
	~DaemonGuard()
	{
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, nullptr, 0);
		}
	}
};

int wait_status(pid_t pid)
{
	int st = 0;
	waitpid(pid, &st, 0);
	return st;
}

} // namespace

class CrashFaultTest : public ServerTest, public ::testing::WithParamInterface<const char *> {};

TEST_P(CrashFaultTest, KilledDaemonLeavesTornEpochAndPreviousRestores)
{
	if (!getenv("SLSVIRTD"))
		GTEST_FAIL() << "SLSVIRTD (path of the slsvirtd binary) is not set; run through meson test";
	const std::string fault = std::string(GetParam()) + ":2";
	DaemonGuard guard;
	pid_t pid = guard.pid = spawn_daemon(sock(), root(), fault);
	ASSERT_GT(pid, 0);
	std::vector<unsigned char> want;
	{
		Engine e(sock(), "crashy");
		ASSERT_TRUE(e.connected());
		ASSERT_TRUE(e.hello());
		fill_guest(e, 1);
		want = snapshot(e);
		auto a1 = e.epoch(1, {1});
		ASSERT_TRUE(a1);
		EXPECT_EQ(a1->status, 0);
		fill_guest(e, 2);
		EXPECT_FALSE(e.epoch(2, {2}));	// the daemon dies: no ack
	}
	int st = wait_status(pid);
	guard.pid = -1;
	ASSERT_TRUE(WIFSIGNALED(st));
	EXPECT_EQ(WTERMSIG(st), SIGKILL);
	auto store = Store::open(root(), "crashy", false);
	ASSERT_TRUE(store.ok());
	SegmentInfo s2 = store->scan(2, ScanDepth::full);
	EXPECT_EQ(s2.status, SegmentStatus::torn) << s2.detail;
	EXPECT_EQ(newest("crashy"), 1u);

	// A fresh daemon (the stale socket is replaced) restores epoch 1.
	pid = guard.pid = spawn_daemon(sock(), root(), "");
	ASSERT_GT(pid, 0);
	{
		Engine e(sock(), "crashy");
		ASSERT_TRUE(e.connected());
		auto ha = e.hello();
		ASSERT_TRUE(ha);
		EXPECT_EQ(ha->durable_epoch, 1u);
		auto r = e.restore(0);
		ASSERT_TRUE(r);
		EXPECT_EQ(r->epoch, 1u);
		EXPECT_TRUE(snapshot(e) == want);
		// Epoch number 2 is reused: the torn segment is overwritten.
		auto a2 = e.epoch(2, {});
		ASSERT_TRUE(a2);
		EXPECT_EQ(a2->status, 0) << a2->message;
	}
	kill(pid, SIGTERM);
	st = wait_status(pid);
	guard.pid = -1;
	EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	EXPECT_EQ(newest("crashy"), 2u);
}

INSTANTIATE_TEST_SUITE_P(Faults, CrashFaultTest, ::testing::Values("crash-mid-data", "crash-before-commit"),
			 [](const auto &info) {
				 std::string n = info.param;
				 for (auto &c : n)
					 if (c == '-')
						 c = '_';
				 return n;
			 });

// ---- delta epochs, write faults, isolation, a real full disk ----

namespace {

constexpr uint64_t kBiosFirstPage = kRamLen / kPage;

// The guest writes some pages; returns their staging page indices, ascending.
std::vector<uint64_t> guest_writes(Engine &e, uint64_t seed, uint64_t n)
{
	std::vector<uint64_t> idx;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = (seed * 37 + i * 7) % (kRamLen / kPage);
		if (i % 6 == 5)
			memset(e.ram() + p * kPage, 0, kPage);	// a page that became zero
		else
			test::fill_random(e.ram() + p * kPage, kPage, seed * 1000 + i);
		idx.push_back(p);
	}
	test::fill_random(e.bios() + kPage, 32, seed);
	idx.push_back(kBiosFirstPage + 1);
	std::sort(idx.begin(), idx.end());
	idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
	return idx;
}

} // namespace

TEST_F(ServerTest, DeltaEpochsRestoreAnyRetainedEpoch)
{
	start("", 100);
	Engine e(sock(), "dvm");
	ASSERT_TRUE(e.hello());
	fill_guest(e, 1);
	std::map<uint64_t, std::vector<unsigned char>> want;
	auto a1 = e.epoch(1, {1});
	ASSERT_TRUE(a1);
	ASSERT_EQ(a1->status, 0) << a1->message;
	want[1] = snapshot(e);
	for (uint64_t ep = 2; ep <= 8; ep++) {
		auto pages = guest_writes(e, ep, 40);
		auto a = e.delta(ep, ep - 1, pages, {static_cast<unsigned char>(ep)});
		ASSERT_TRUE(a);
		ASSERT_EQ(a->status, 0) << a->message;
		EXPECT_LT(a->bytes_written, 60 * kPage);	// only the listed pages
		want[ep] = snapshot(e);
	}
	for (uint64_t ep : {8u, 1u, 5u, 2u}) {
		memset(e.ram(), 0xEE, kRamLen + kBiosLen);
		auto r = e.restore(ep);
		ASSERT_TRUE(r);
		ASSERT_EQ(r->status, 0) << r->message;
		EXPECT_EQ(r->epoch, ep);
		EXPECT_TRUE(snapshot(e) == want[ep]) << "epoch " << ep;
	}
	// The last restore (2) is the current timeline's newest epoch.
	auto r0 = e.restore(0);
	ASSERT_TRUE(r0);
	EXPECT_EQ(r0->epoch, 2u);
	EXPECT_EQ(r0->devstate, std::vector<unsigned char>{2});
	ASSERT_EQ(e.restore(8)->status, 0);
	r0 = e.restore(0);
	ASSERT_TRUE(r0);
	EXPECT_EQ(r0->epoch, 8u);
	EXPECT_EQ(r0->devstate, std::vector<unsigned char>{8});
}

TEST_F(ServerTest, DeltaRefusedWithoutDurableParentOrWithABadPageList)
{
	start();
	Engine e(sock(), "refuse");
	ASSERT_TRUE(e.hello());
	fill_guest(e, 1);
	// A delta as the first epoch of a connection: no parent to apply on.
	auto a = e.delta(1, 0, {1, 2});
	ASSERT_TRUE(a);
	EXPECT_EQ(a->status, -EINVAL);
	auto b = e.delta(2, 1, {1, 2});
	ASSERT_TRUE(b);
	EXPECT_EQ(b->status, -EINVAL);
	EXPECT_NE(b->message.find("FULL"), std::string::npos) << b->message;
	ASSERT_EQ(e.epoch(3, {})->status, 0);
	const auto want = snapshot(e);
	struct Bad {
		std::vector<uint64_t> pages;
		const char *why;
	};
	uint64_t ep = 4, parent = 3;
	for (const Bad &bad : std::vector<Bad>{{{5, 3}, "unsorted"},
					       {{5, 5}, "duplicate"},
					       {{kBiosFirstPage + 16}, "outside"},	// the staging gap
					       {{kStaging / kPage + 3}, "outside"}}) {
		guest_writes(e, ep, 3);
		auto r = e.delta(ep, parent, bad.pages);
		ASSERT_TRUE(r) << bad.why;	// an error ack, the connection stays
		EXPECT_EQ(r->status, -EINVAL) << bad.why;
		EXPECT_NE(r->message.find(bad.why), std::string::npos) << bad.why << ": " << r->message;
		EXPECT_FALSE(Store::open(root(), "refuse", false)->scan(ep, ScanDepth::structure).status ==
			     SegmentStatus::valid);
		ep++;
		ASSERT_EQ(e.epoch(ep, {})->status, 0);	// the engine goes FULL
		parent = ep++;
	}
	EXPECT_EQ(newest("refuse"), parent);
	// After a refused epoch a delta is refused too; a FULL works.
	auto bad = e.delta(ep++, parent, {9, 8});
	ASSERT_EQ(bad->status, -EINVAL);
	auto c = e.delta(ep++, parent, {1});
	ASSERT_TRUE(c);
	EXPECT_EQ(c->status, -EINVAL);
	auto f = e.epoch(ep, {});
	ASSERT_TRUE(f);
	EXPECT_EQ(f->status, 0) << f->message;
	auto r = e.restore(3);
	ASSERT_TRUE(r);
	EXPECT_EQ(r->status, 0);
	// A page list whose count disagrees with the length is a framing error: closed.
	Bytes m = encode_epoch({ep + 1, ep, 0, 0, 0, {}, {1, 2}}, e.next_seq());
	uint32_t n = 3;
	memcpy(m.data() + kHeaderSize + offsetof(sls_msg_epoch, nr_pages), &n, 4);
	uint32_t crc = crc32c(m.data() + kHeaderSize, m.size() - kHeaderSize);
	memcpy(m.data() + offsetof(sls_msg_hdr, payload_crc), &crc, 4);
	ASSERT_TRUE(e.send_raw(m));
	EXPECT_TRUE(e.closed_by_peer());
	(void)want;
}

class ServerWriteFaultTest : public ServerTest,
			     public ::testing::WithParamInterface<std::pair<const char *, int>> {};

TEST_P(ServerWriteFaultTest, FailedEpochAckedWithErrnoThenFullWorks)
{
	start(std::string(GetParam().first) + ":3");
	Engine e(sock(), "wf");
	ASSERT_TRUE(e.hello());
	fill_guest(e, 1);
	ASSERT_EQ(e.epoch(1, {})->status, 0);
	auto p2 = guest_writes(e, 2, 30);
	ASSERT_EQ(e.delta(2, 1, p2)->status, 0);
	const auto want2 = snapshot(e);
	auto p3 = guest_writes(e, 3, 30);
	auto a3 = e.delta(3, 2, p3);
	ASSERT_TRUE(a3);
	EXPECT_EQ(a3->status, GetParam().second) << a3->message;
	if (GetParam().second) {
		EXPECT_NE(a3->message.find("epoch 3"), std::string::npos) << a3->message;
		EXPECT_EQ(newest("wf"), 2u);
		auto d = e.delta(4, 3, guest_writes(e, 4, 5));	// the engine must go FULL
		ASSERT_TRUE(d);
		EXPECT_EQ(d->status, -EINVAL);
		const auto want5 = snapshot(e);
		ASSERT_EQ(e.epoch(5, {})->status, 0);
		auto r = e.restore(0);
		ASSERT_TRUE(r);
		EXPECT_EQ(r->epoch, 5u);
		EXPECT_TRUE(snapshot(e) == want5);
		r = e.restore(2);
		ASSERT_TRUE(r);
		EXPECT_TRUE(snapshot(e) == want2);
	} else {	// short-write: the epoch succeeds byte-exact
		const auto want3 = snapshot(e);
		auto r = e.restore(3);
		ASSERT_TRUE(r);
		EXPECT_EQ(r->status, 0);
		EXPECT_TRUE(snapshot(e) == want3);
	}
}

INSTANTIATE_TEST_SUITE_P(Faults, ServerWriteFaultTest,
			 ::testing::Values(std::make_pair("short-write", 0), std::make_pair("fail-write", -EIO),
					   std::make_pair("enospc", -ENOSPC), std::make_pair("fail-fdatasync", -EIO)),
			 test::FaultParamName{});

TEST_F(ServerTest, OneVmFloodingAndOneSendingGarbageDoNotStallAThird)
{
	start("", 8);
	std::atomic<bool> stop{false};
	std::atomic<unsigned> flood_epochs{0}, garbage_conns{0};
	std::thread flood([&] {
		Engine f(sock(), "flood");
		if (!f.hello())
			return;
		fill_guest(f, 9);
		for (uint64_t ep = 1; !stop; ep++) {
			auto a = f.epoch(ep, std::vector<unsigned char>(4096, 1));	// FULL, ~600 KiB each
			if (!a || a->status)
				return;
			flood_epochs++;
		}
	});
	std::thread garbage([&] {
		for (uint64_t i = 0; !stop; i++) {
			Engine g(sock(), "garbage");
			if (i % 2) {
				Bytes junk(4096);
				test::fill_random(junk.data(), junk.size(), i);
				g.send_raw(junk);
			} else if (g.hello()) {
				Bytes m = encode_epoch({1, 0, 0, 0, 0, {}, {~0ull}}, g.next_seq());
				m[m.size() - 1] ^= 0x55;	// bad crc
				g.send_raw(m);
			}
			g.closed_by_peer();
			garbage_conns++;
		}
	});
	Engine e(sock(), "quiet");
	ASSERT_TRUE(e.hello());
	fill_guest(e, 3);
	ASSERT_EQ(e.epoch(1, {})->status, 0);
	uint64_t worst_ns = 0;
	for (uint64_t ep = 2; ep <= 40; ep++) {
		auto pages = guest_writes(e, ep, 20);
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		auto a = e.delta(ep, ep - 1, pages);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ASSERT_TRUE(a);
		ASSERT_EQ(a->status, 0) << a->message;
		worst_ns = std::max<uint64_t>(worst_ns, static_cast<uint64_t>((t1.tv_sec - t0.tv_sec) * 1000000000ll +
									       (t1.tv_nsec - t0.tv_nsec)));
	}
	const auto want = snapshot(e);
	stop = true;
	flood.join();
	garbage.join();
	EXPECT_GT(flood_epochs.load(), 5u);
	EXPECT_GT(garbage_conns.load(), 2u);
	// Bounded: a 20-page delta never waits behind the other VMs' work for long.
	EXPECT_LT(worst_ns, 2000000000ull) << "worst ack latency " << worst_ns / 1e6 << " ms";
	RecordProperty("quiet_worst_ack_ms", std::to_string(worst_ns / 1000000));
	memset(e.ram(), 0, kRamLen + kBiosLen);
	auto r = e.restore(0);
	ASSERT_TRUE(r);
	EXPECT_EQ(r->epoch, 40u);
	EXPECT_TRUE(snapshot(e) == want);
	auto st = Store::open(root(), "quiet", false);
	auto v = st->catalog(ScanDepth::full);
	ASSERT_TRUE(v.ok());
	for (const auto &x : *v)
		EXPECT_TRUE(x.restorable) << x.seg.epoch << ": " << x.why;
	EXPECT_EQ(newest("garbage"), 0u);
}

TEST_F(ServerTest, RealDiskFullGivesEnospcAndRecovers)
{
	if (geteuid() != 0)
		GTEST_SKIP() << "needs root to mount a small tmpfs";
	const std::string mnt = dir.path() + "/small";
	ASSERT_EQ(mkdir(mnt.c_str(), 0700), 0);
	if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=4m,mode=0700") != 0)
		GTEST_SKIP() << "cannot mount a tmpfs here: " << strerror(errno);
	struct Unmount {
		std::string p;
		~Unmount() { umount2(p.c_str(), MNT_DETACH); }
	} unmount{mnt};
	start("", 1000, mnt);
	Engine e(sock(), "full");
	ASSERT_TRUE(e.hello());
	fill_guest(e, 1);	// ~150 non-zero pages: ~620 KiB per FULL epoch
	std::map<uint64_t, std::vector<unsigned char>> want;
	uint64_t ep = 1, last_ok = 0;
	int failed_status = 0;
	std::string failed_msg;
	for (; ep < 40; ep++) {
		guest_writes(e, ep, 10);
		auto a = e.epoch(ep, {});
		ASSERT_TRUE(a);
		if (a->status) {
			failed_status = a->status;
			failed_msg = a->message;
			break;
		}
		want[ep] = snapshot(e);
		last_ok = ep;
	}
	ASSERT_EQ(failed_status, -ENOSPC) << failed_msg;
	EXPECT_NE(failed_msg.find("No space left"), std::string::npos) << failed_msg;
	ASSERT_GT(last_ok, 0u);
	// Nothing acked is lost; the failed epoch left no file behind.
	auto st = Store::open(mnt, "full", false);
	ASSERT_TRUE(st.ok());
	EXPECT_EQ(st->newest_valid()->epoch, last_ok);
	EXPECT_EQ(st->list(ScanDepth::structure)->size(), last_ok);
	for (uint64_t r : {last_ok, uint64_t{1}}) {
		auto x = e.restore(r);
		ASSERT_TRUE(x);
		ASSERT_EQ(x->status, 0) << x->message;
		EXPECT_TRUE(snapshot(e) == want[r]);
	}
	// Free space (as an operator would: drop old epochs); epochs succeed again.
	for (uint64_t old = 1; old + 2 <= last_ok; old++)
		unlink(st->segment_path(old).c_str());
	auto again = e.epoch(ep + 1, {});
	ASSERT_TRUE(again);
	EXPECT_EQ(again->status, 0) << again->message;
	auto d = e.delta(ep + 2, ep + 1, guest_writes(e, ep + 2, 5));
	ASSERT_TRUE(d);
	EXPECT_EQ(d->status, 0) << d->message;
	server->stop();
	server.reset();
}

TEST_F(ServerTest, DaemonKilledMidCompactionKeepsRetainedEpochsRestorable)
{
	if (!getenv("SLSVIRTD"))
		GTEST_FAIL() << "SLSVIRTD (path of the slsvirtd binary) is not set; run through meson test";
	// retain 3, compact as soon as possible: after epoch 6 the oldest
	// retained is 4, which gets a base; the daemon dies halfway through
	// deleting 1..3.
	DaemonGuard guard;
	pid_t pid = guard.pid = spawn_daemon(sock(), root(), "crash-mid-compaction:4",
					     {"--retain", "3", "--compact-min", "1", "--compact-bytes-pct", "0"});
	ASSERT_GT(pid, 0);
	std::map<uint64_t, std::vector<unsigned char>> want;
	{
		Engine e(sock(), "cvm");
		ASSERT_TRUE(e.hello());
		fill_guest(e, 1);
		ASSERT_EQ(e.epoch(1, {})->status, 0);
		want[1] = snapshot(e);
		for (uint64_t ep = 2; ep <= 6; ep++) {
			auto a = e.delta(ep, ep - 1, guest_writes(e, ep, 25), {static_cast<unsigned char>(ep)});
			if (!a)
				break;	// the daemon may already be gone (compaction runs beside the epochs)
			ASSERT_EQ(a->status, 0) << a->message;
			want[ep] = snapshot(e);
		}
	}
	int st = 0;
	for (int i = 0; i < 2000 && waitpid(pid, &st, WNOHANG) == 0; i++)
		usleep(10000);
	ASSERT_TRUE(WIFSIGNALED(st)) << "daemon did not crash in compaction within 20 s (status " << st << ")";
	guard.pid = -1;
	auto store = Store::open(root(), "cvm", false);
	ASSERT_TRUE(store.ok());
	auto v = store->catalog(ScanDepth::full);
	ASSERT_TRUE(v.ok());
	std::map<uint64_t, EpochView> by;
	for (auto &x : *v)
		by[x.seg.epoch] = x;
	ASSERT_TRUE(by.count(4));
	EXPECT_EQ(by[4].seg.kind, SegmentKind::base);
	// Every acked epoch >= 4 (the retained ones) is restorable; the newest acked one is the newest restorable.
	uint64_t newest_acked = want.rbegin()->first;
	for (uint64_t ep = 4; ep <= newest_acked; ep++)
		EXPECT_TRUE(by[ep].restorable) << ep << ": " << by[ep].why;
	EXPECT_EQ(newest("cvm"), newest_acked);
	// A fresh daemon restores each retained epoch byte-exact and finishes the cleanup.
	pid = guard.pid = spawn_daemon(sock(), root(), "", {"--retain", "3", "--compact-min", "1",
							   "--compact-bytes-pct", "0"});
	{
		Engine e(sock(), "cvm");
		auto ha = e.hello();
		ASSERT_TRUE(ha);
		EXPECT_EQ(ha->durable_epoch, newest_acked);
		for (uint64_t ep = 4; ep <= newest_acked; ep++) {
			auto r = e.restore(ep);
			ASSERT_TRUE(r);
			ASSERT_EQ(r->status, 0) << r->message;
			EXPECT_TRUE(snapshot(e) == want[ep]) << ep;
		}
		ASSERT_EQ(e.epoch(newest_acked + 1, {})->status, 0);	// a FULL after the reconnect
	}
	kill(pid, SIGTERM);
	wait_status(pid);
	guard.pid = -1;
}

// A lazily restored VM reads its chain's segment files through fds an
// earlier slsvirtd gave it. A restarted slsvirtd must not recycle those
// files as spares (a new epoch would overwrite pages the VM has not read
// yet): it adopts the holds from /proc before serving anyone. Here this
// process plays the QEMU that holds epoch 1's file open.
TEST_F(ServerTest, RestartedDaemonDoesNotRecycleFilesARunningVmReads)
{
	if (!getenv("SLSVIRTD"))
		GTEST_FAIL() << "SLSVIRTD (path of the slsvirtd binary) is not set; run through meson test";
	DaemonGuard guard;
	pid_t pid = guard.pid = spawn_daemon(sock(), root(), "");
	ASSERT_GT(pid, 0);
	{
		Engine e(sock(), "hvm");
		ASSERT_TRUE(e.hello());
		fill_guest(e, 1);
		ASSERT_EQ(e.epoch(1, {})->status, 0);
		for (uint64_t ep = 2; ep <= 3; ep++)
			ASSERT_EQ(e.delta(ep, ep - 1, guest_writes(e, ep, 25))->status, 0);
	}
	auto st = Store::open(root(), "hvm", false);
	ASSERT_TRUE(st.ok()) << st.message();
	UniqueFd held(open(st->segment_path(1).c_str(), O_RDONLY | O_CLOEXEC));
	ASSERT_TRUE(held.valid());
	kill(pid, SIGKILL);
	wait_status(pid);
	// A new daemon that keeps only the newest epoch and recycles spares.
	pid = guard.pid = spawn_daemon(sock(), root(), "", {"--retain", "1", "--compact-min", "1",
							   "--compact-bytes-pct", "0", "--spare-files", "16"});
	ASSERT_GT(pid, 0);
	{
		Engine e(sock(), "hvm");
		ASSERT_TRUE(e.hello());
		fill_guest(e, 4);
		ASSERT_EQ(e.epoch(4, {})->status, 0);
		for (uint64_t ep = 5; ep <= 9; ep++)
			ASSERT_EQ(e.delta(ep, ep - 1, guest_writes(e, ep, 25))->status, 0);
		// Retention runs beside the epochs: wait until epoch 1 is gone.
		for (int i = 0; i < 1000 && access(st->segment_path(1).c_str(), F_OK) == 0; i++)
			usleep(10000);
	}
	EXPECT_NE(access(st->segment_path(1).c_str(), F_OK), 0) << "retention never removed epoch 1";
	// Deleted, not recycled: through the open fd it is still epoch 1, intact.
	const std::string via_fd = "/proc/self/fd/" + std::to_string(held.get());
	SegmentInfo s = scan_segment(via_fd, 1, "hvm", ScanDepth::full);
	EXPECT_EQ(s.status, SegmentStatus::valid) << s.detail;
	EXPECT_EQ(s.epoch, 1u);
	kill(pid, SIGTERM);
	wait_status(pid);
	guard.pid = -1;
}
