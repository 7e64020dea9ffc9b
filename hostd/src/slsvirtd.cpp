// slsvirtd: the host daemon that makes epochs durable (see hostd/README.md).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "slsvirt/fd.hpp"
#include "slsvirt/log.hpp"
#include "slsvirt/server.hpp"

using namespace slsvirt;

namespace {

Server *g_server = nullptr;

void on_signal(int)
{
	if (g_server)
		g_server->request_stop();
}

const char kUsage[] =
	"usage: slsvirtd --socket PATH --store-root DIR [--retain N] [--compact-min N]\n"
	"                [--compact-bytes-pct P] [--no-merge] [--spare-files N] [--spare-mib M]\n"
	"                [--no-direct-io] [--daemonize]\n"
	"                [--pidfile FILE] [--log FILE] [--fault SPEC] [--verbose]\n"
	"\n"
	"Host daemon of slsvirt: accepts engine (QEMU) connections on PATH and\n"
	"writes each epoch durably into DIR/<vm>/epochs/.\n"
	"\n"
	"  --socket PATH     unix socket to listen on (dir created 0700, socket 0600)\n"
	"  --store-root DIR  store root, one directory per VM\n"
	"  --retain N        keep at least the newest N restorable epochs per VM (default 8)\n"
	"  --compact-min N   fold older epochs into a base once >= N segments can go (default 64)\n"
	"  --compact-bytes-pct P  ... and they hold >= P% of the chain root's bytes (default 100);\n"
	"                    below that, merge the deltas on the root into one instead\n"
	"  --no-merge        never merge deltas: only bases (the behaviour before merges)\n"
	"  --spare-files N   keep up to N retired segment files per VM as spares that new\n"
	"                    epochs overwrite in place (default 128; 0: delete them)\n"
	"  --spare-mib M     ... holding at most M MiB (default 1024)\n"
	"  --no-direct-io    buffered segment writes (default: O_DIRECT where the filesystem\n"
	"                    supports it, else buffered)\n"
	"  --daemonize       detach after the socket is listening\n"
	"  --pidfile FILE    write the daemon's pid to FILE\n"
	"  --log FILE        append log lines to FILE instead of stderr\n"
	"  --fault SPEC      fault injection, also from $SLSVIRTD_FAULT:\n"
	"                    crash-mid-data:E, crash-before-commit:E, fail-write:E,\n"
	"                    short-write:E, enospc:E, fail-fdatasync:E, delay-ack-ms:N,\n"
	"                    crash-compaction-writing:E, crash-compaction-tmp:E,\n"
	"                    crash-compaction-renamed:E, crash-mid-compaction:E\n"
	"                    (comma-separated; E = epoch, for compaction the base's epoch)\n"
	"  --verbose         debug log lines\n";

int usage_error(const std::string &msg)
{
	fprintf(stderr, "slsvirtd: %s\n%s", msg.c_str(), kUsage);
	return 2;
}

Status daemonize()
{
	pid_t p = fork();
	if (p < 0)
		return errno_error("fork");
	if (p > 0)
		_exit(0);
	if (setsid() < 0)
		return errno_error("setsid");
	p = fork();
	if (p < 0)
		return errno_error("fork");
	if (p > 0)
		_exit(0);
	UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
	if (!null.valid())
		return errno_error("open /dev/null");
	::dup2(null.get(), STDIN_FILENO);
	::dup2(null.get(), STDOUT_FILENO);
	return {};
}

} // namespace

int main(int argc, char **argv)
{
	ServerConfig cfg;
	std::string pidfile, logfile, fault_spec;
	bool detach = false, verbose = false;
	if (const char *f = getenv("SLSVIRTD_FAULT"))
		fault_spec = f;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		auto value = [&](const char *name) -> const char * {
			if (i + 1 >= argc)
				return nullptr;
			(void)name;
			return argv[++i];
		};
		const char *v = nullptr;
		if (a == "--help" || a == "-h") {
			fputs(kUsage, stdout);
			return 0;
		} else if (a == "--daemonize") {
			detach = true;
		} else if (a == "--verbose") {
			verbose = true;
		} else if (a == "--no-merge") {
			cfg.compact_merge = false;
		} else if (a == "--direct-io" || a == "--no-direct-io") {
			cfg.direct_io = a == "--direct-io";
		} else if (a == "--spare-files" || a == "--spare-mib") {
			if (!(v = value(a.c_str())))
				return usage_error(a + " needs a value");
			char *end;
			unsigned long long n = strtoull(v, &end, 10);
			if (!*v || *end || n > (1ull << 32))
				return usage_error(a + " needs a number");
			if (a == "--spare-files")
				cfg.spare_files = static_cast<unsigned>(n);
			else
				cfg.spare_bytes = static_cast<uint64_t>(n) << 20;
		} else if (a == "--compact-min" || a == "--compact-bytes-pct") {
			if (!(v = value(a.c_str())))
				return usage_error(a + " needs a value");
			char *end;
			unsigned long n = strtoul(v, &end, 10);
			if (!*v || *end || n > 1000000)
				return usage_error(a + " needs a number");
			(a == "--compact-min" ? cfg.compact_min : cfg.compact_bytes_pct) = static_cast<unsigned>(n);
		} else if (a == "--socket" || a == "--store-root" || a == "--retain" || a == "--pidfile" ||
			   a == "--log" || a == "--fault") {
			if (!(v = value(a.c_str())))
				return usage_error(a + " needs a value");
			if (a == "--socket")
				cfg.socket_path = v;
			else if (a == "--store-root")
				cfg.store_root = v;
			else if (a == "--pidfile")
				pidfile = v;
			else if (a == "--log")
				logfile = v;
			else if (a == "--fault")
				fault_spec = v;
			else {
				char *end;
				unsigned long n = strtoul(v, &end, 10);
				if (!*v || *end || n < 1 || n > 1000000)
					return usage_error("--retain needs a number >= 1");
				cfg.retain = static_cast<unsigned>(n);
			}
		} else {
			return usage_error("unknown argument '" + a + "'");
		}
	}
	if (cfg.socket_path.empty() || cfg.store_root.empty())
		return usage_error("--socket and --store-root are required");
	auto faults = FaultPlan::parse(fault_spec);
	if (!faults)
		return usage_error(faults.message());
	cfg.faults = *faults;
	if (verbose)
		log_set_level(LogLevel::debug);
	if (!logfile.empty() && !log_open(logfile)) {
		fprintf(stderr, "slsvirtd: cannot open log %s: %s\n", logfile.c_str(), strerror(errno));
		return 1;
	}
	if (Status s = make_dirs(cfg.store_root, 0700); !s.ok()) {
		SLS_LOG_ERROR("store root: %s", s.message().c_str());
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);

	Server server(cfg);
	// Listen before detaching: once the parent exits the socket answers.
	if (Status s = server.listen(); !s.ok()) {
		SLS_LOG_ERROR("%s", s.message().c_str());
		return 1;
	}
	if (detach) {
		if (Status s = daemonize(); !s.ok()) {
			SLS_LOG_ERROR("%s", s.message().c_str());
			return 1;
		}
		if (logfile.empty())
			SLS_LOG_WARN("daemonized without --log: log lines go to the inherited stderr");
	}
	if (!pidfile.empty()) {
		if (Status s = write_file_atomic(pidfile, strf("%d\n", getpid()), 0644); !s.ok())
			SLS_LOG_WARN("pidfile: %s", s.message().c_str());
	}
	g_server = &server;
	struct sigaction sa{};
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, nullptr);
	sigaction(SIGINT, &sa, nullptr);
	Status s = server.run();
	g_server = nullptr;
	server.stop();
	if (!pidfile.empty())
		::unlink(pidfile.c_str());
	if (!s.ok()) {
		SLS_LOG_ERROR("%s", s.message().c_str());
		return 1;
	}
	SLS_LOG_INFO("stopped");
	return 0;
}
