// slsvirtd end to end over a real unix socket with a memfd staging area:
// in-process Server for most cases, the slsvirtd binary for crash faults.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <optional>

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

	std::optional<HelloAck> hello(bool pass_fd = true)
	{
		if (!send_raw(encode_hello(hello_msg(), ++seq_), pass_fd ? memfd_.get() : -1))
			return std::nullopt;
		auto m = recv_msg();
		if (!m || m->first.type != SLS_MSG_HELLO_ACK)
			return std::nullopt;
		auto a = decode_hello_ack(m->second);
		return a.ok() ? std::optional(*a) : std::nullopt;
	}

	std::optional<EpochAck> epoch(uint64_t e, const std::vector<unsigned char> &dev)
	{
		if (!send_raw(encode_epoch({e, e - 1, SLS_EPOCH_F_FULL, 123, 456, dev}, ++seq_)))
			return std::nullopt;
		auto m = recv_msg();
		if (!m || m->first.type != SLS_MSG_EPOCH_ACK)
			return std::nullopt;
		auto a = decode_epoch_ack(m->second);
		return a.ok() ? std::optional(*a) : std::nullopt;
	}

	struct Restored {
		uint64_t epoch;
		int32_t status;
		std::string message;
		std::vector<unsigned char> devstate;
	};
	std::optional<Restored> restore(uint64_t e)
	{
		if (!send_raw(encode_restore({e}, ++seq_)))
			return std::nullopt;
		auto m = recv_msg();
		if (!m || m->first.type != SLS_MSG_RESTORE_ACK)
			return std::nullopt;
		auto a = decode_restore_ack(m->second);
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
	void start(const std::string &faults = "")
	{
		ServerConfig cfg;
		cfg.socket_path = sock();
		cfg.store_root = root();
		cfg.retain = 8;
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

	auto r0 = e.restore(0);	// newest
	ASSERT_TRUE(r0);
	EXPECT_EQ(r0->epoch, 2u);
	EXPECT_TRUE(r0->devstate.empty());
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

pid_t spawn_daemon(const std::string &sock, const std::string &root, const std::string &fault)
{
	const char *bin = getenv("SLSVIRTD");
	if (!bin || !*bin)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		execl(bin, bin, "--socket", sock.c_str(), "--store-root", root.c_str(), "--fault", fault.c_str(),
		      static_cast<char *>(nullptr));
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
