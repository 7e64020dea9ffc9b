// vm.conf encoding and the QMP client against a scripted QMP server.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "slsvirt/fd.hpp"
#include "slsvirt/qmp.hpp"
#include "slsvirt/crc32c.hpp"
#include "slsvirt/vm_conf.hpp"
#include "test_util.hpp"

using namespace slsvirt;

TEST(VmConf, RoundTripAndCorruption)
{
	test::TempDir dir;
	VmConf c{"/q", "/k", "/i", "console=ttyS0 a=\"b c\"", "512M", 2, {"-d", "in_asm", "x\ny"}};
	const std::string p = dir.path() + "/vm.conf";
	ASSERT_TRUE(save_vm_conf(p, c).ok());
	auto back = load_vm_conf(p);
	ASSERT_TRUE(back.ok()) << back.message();
	EXPECT_EQ(back->append, c.append);
	EXPECT_EQ(back->extra_args, c.extra_args);
	EXPECT_EQ(back->smp, 2u);

	std::string text = encode_vm_conf(c);
	std::string flipped = text;
	flipped[flipped.size() - 5] ^= 1;
	EXPECT_NE(decode_vm_conf(flipped).message().find("crc"), std::string::npos);
	std::string badmagic = "XLSVCONF" + text.substr(8);
	EXPECT_FALSE(decode_vm_conf(badmagic).ok());
	std::string v2 = text;
	v2[9] = '2';
	EXPECT_NE(decode_vm_conf(v2).message().find("version"), std::string::npos);
	EXPECT_FALSE(decode_vm_conf(text.substr(0, text.size() / 2)).ok());
}

TEST(VmConf, PeriodMsRoundTripAndOldConfigsWithoutIt)
{
	VmConf c{"/q", "/k", "/i", "a", "256M", 1, {}, 10};
	auto back = decode_vm_conf(encode_vm_conf(c));
	ASSERT_TRUE(back.ok()) << back.message();
	EXPECT_EQ(back->period_ms, 10u);
	// A config written before period_ms existed reads as 0 (on request only).
	std::string body = "{\"qemu\":\"/q\",\"kernel\":\"/k\",\"initrd\":\"/i\",\"append\":\"a\",\"mem\":\"256M\","
			   "\"smp\":1,\"extra_args\":[]}\n";
	char hdr[64];
	snprintf(hdr, sizeof(hdr), "SLSVCONF 1 %08x\n", crc32c(body.data(), body.size()));
	auto old = decode_vm_conf(hdr + body);
	ASSERT_TRUE(old.ok()) << old.message();
	EXPECT_EQ(old->period_ms, 0u);
}

namespace {

// Serves one QMP client: greeting, capabilities, an event, then scripted replies.
void fake_qmp(int listen_fd)
{
	UniqueFd c(accept(listen_fd, nullptr, nullptr));
	auto send = [&](const std::string &s) { (void)write_full(c.get(), s.data(), s.size(), "qmp").ok(); };
	auto recv_line = [&]() {
		std::string l;
		char ch;
		while (read(c.get(), &ch, 1) == 1 && ch != '\n')
			l += ch;
		return l;
	};
	send("{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
	recv_line();	// qmp_capabilities
	send("{\"return\": {}}\r\n");
	std::string l = recv_line();	// sls-checkpoint
	EXPECT_NE(l.find("sls-checkpoint"), std::string::npos);
	send("{\"event\": \"STOP\", \"timestamp\": {}}\r\n{\"return\": {\"epoch\": 7}, \"id\": 2}\r\n");
	l = recv_line();	// sls-restore
	EXPECT_NE(l.find("\"epoch\":3"), std::string::npos) << l;
	send("{\"error\": {\"class\": \"GenericError\", \"desc\": \"epoch 3 is corrupt\"}, \"id\": 3}\r\n");
}

} // namespace

TEST(Qmp, GreetingEventsAndErrors)
{
	test::TempDir dir;
	const std::string path = dir.path() + "/q.sock";
	UniqueFd l(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	sockaddr_un a{};
	a.sun_family = AF_UNIX;
	strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
	ASSERT_EQ(bind(l.get(), reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
	ASSERT_EQ(listen(l.get(), 1), 0);
	std::thread srv(fake_qmp, l.get());
	auto q = QmpClient::connect(path, 5000);
	ASSERT_TRUE(q.ok()) << q.message();
	auto r = q->execute("sls-checkpoint");
	ASSERT_TRUE(r.ok()) << r.message();
	EXPECT_EQ((*r)["epoch"].get<int>(), 7);
	auto e = q->execute("sls-restore", {{"epoch", 3}});
	ASSERT_FALSE(e.ok());
	EXPECT_NE(e.message().find("epoch 3 is corrupt"), std::string::npos) << e.message();
	srv.join();
	// The server is gone: the next command fails cleanly.
	EXPECT_FALSE(q->execute("query-sls").ok());
}

TEST(Qmp, ConnectFailsCleanly)
{
	auto q = QmpClient::connect("/nonexistent/slsvirt.qmp", 100);
	EXPECT_FALSE(q.ok());
	EXPECT_FALSE(q.message().empty());
}
