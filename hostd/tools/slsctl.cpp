// slsctl: run, checkpoint, restore and inspect slsvirt VMs (hostd/README.md).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "slsvirt/branch.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/proto.h"
#include "slsvirt/qmp.hpp"
#include "slsvirt/store.hpp"
#include "slsvirt/vm_conf.hpp"

using namespace slsvirt;

namespace {

const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);
	return v && *v ? v : dflt;
}

uint64_t mono_ms()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

void sleep_ms(unsigned ms)
{
	struct timespec ts = {static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

int fail(const std::string &msg)
{
	fprintf(stderr, "slsctl: error: %s\n", msg.c_str());
	return 1;
}

// ---- argument parsing: a small option table per subcommand ----

struct OptSpec {
	const char *name;	// "--kernel"
	const char *arg;	// nullptr = flag
	const char *help;
	bool multi = false;
};

const OptSpec kCommonOpts[] = {
	{"--run-dir", "DIR", "runtime dir (default $SLSVIRT_RUN_DIR or /run/slsvirt)"},
	{"--store-root", "DIR", "store root (default $SLSVIRT_STORE_ROOT or /var/lib/slsvirt)"},
	{"--qemu", "PATH", "QEMU binary (default $SLSVIRT_QEMU)"},
};

struct Command {
	const char *name;
	const char *synopsis;
	const char *summary;
	std::vector<OptSpec> opts;
	int (*fn)(struct Args &);
};

struct Args {
	const Command *cmd = nullptr;
	std::vector<std::string> positional;
	std::map<std::string, std::vector<std::string>> values;
	bool has(const std::string &o) const { return values.count(o) != 0; }
	std::string get(const std::string &o, const std::string &dflt = "") const
	{
		auto it = values.find(o);
		return it == values.end() || it->second.empty() ? dflt : it->second.back();
	}
	const std::vector<std::string> &all(const std::string &o) const
	{
		static const std::vector<std::string> none;
		auto it = values.find(o);
		return it == values.end() ? none : it->second;
	}
	std::string run_dir() const { return get("--run-dir", env_or("SLSVIRT_RUN_DIR", "/run/slsvirt")); }
	std::string store_root() const
	{
		return get("--store-root", env_or("SLSVIRT_STORE_ROOT", "/var/lib/slsvirt"));
	}
	std::string qemu() const { return get("--qemu", env_or("SLSVIRT_QEMU", "")); }
};

void print_help(const Command &c)
{
	printf("usage: slsctl %s %s\n\n%s\n\noptions:\n", c.name, c.synopsis, c.summary);
	auto line = [](const OptSpec &o) {
		std::string left = std::string(o.name) + (o.arg ? std::string(" ") + o.arg : "");
		printf("  %-22s %s\n", left.c_str(), o.help);
	};
	for (const auto &o : c.opts)
		line(o);
	for (const auto &o : kCommonOpts)
		line(o);
	printf("  %-22s %s\n", "--help", "show this help");
}

Result<unsigned long long> parse_number(const std::string &opt, const std::string &v)
{
	char *end = nullptr;
	errno = 0;
	unsigned long long n = strtoull(v.c_str(), &end, 10);
	if (v.empty() || *end || errno || v[0] == '-')
		return make_error(-EINVAL, "%s: '%s' is not a non-negative number", opt.c_str(), v.c_str());
	return n;
}

Result<double> parse_seconds(const std::string &opt, const std::string &v)
{
	char *end = nullptr;
	double d = strtod(v.c_str(), &end);
	if (v.empty() || *end || !(d > 0) || d > 1e6)
		return make_error(-EINVAL, "%s: '%s' is not a positive number of seconds", opt.c_str(), v.c_str());
	return d;
}

// ---- helpers shared by subcommands ----

std::string qmp_path(const Args &a, const std::string &vm) { return a.run_dir() + "/" + vm + ".qmp"; }
std::string pid_path(const Args &a, const std::string &vm) { return a.run_dir() + "/" + vm + ".pid"; }

// The pid of a live QEMU of this VM, per its pidfile (0 = none).
pid_t live_qemu(const Args &a, const std::string &vm)
{
	auto txt = read_small_file(pid_path(a, vm), 64);
	if (!txt)
		return 0;
	long pid = strtol(txt->c_str(), nullptr, 10);
	if (pid <= 0 || (kill(static_cast<pid_t>(pid), 0) < 0 && errno != EPERM))
		return 0;
	// Guard against pid reuse: the process must be the one using this VM's QMP socket.
	// (/proc files report size 0: read to EOF, not read_small_file.)
	UniqueFd fd(::open(strf("/proc/%ld/cmdline", pid).c_str(), O_RDONLY | O_CLOEXEC));
	if (fd.valid()) {
		std::string c;
		char buf[4096];
		ssize_t n;
		while (c.size() < (1u << 20) && ((n = ::read(fd.get(), buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)))
			c.append(buf, static_cast<size_t>(std::max<ssize_t>(n, 0)));
		for (auto &ch : c)
			if (ch == '\0')
				ch = ' ';
		if (c.find(qmp_path(a, vm)) == std::string::npos)
			return 0;
	}
	return static_cast<pid_t>(pid);
}

bool socket_answers(const std::string &path)
{
	sockaddr_un addr{};
	if (path.size() >= sizeof(addr.sun_path))
		return false;
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path.c_str(), path.size());
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	return fd.valid() && ::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0;
}

std::string self_dir()
{
	char buf[4096];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	if (n <= 0)
		return ".";
	std::string p(buf, static_cast<size_t>(n));
	auto s = p.rfind('/');
	return s == std::string::npos ? "." : p.substr(0, s);
}

std::string tail_of(const std::string &path, size_t max = 2000)
{
	auto t = read_small_file(path, 64 << 20);
	if (!t || t->empty())
		return "";
	return t->size() > max ? t->substr(t->size() - max) : *t;
}

// Redirects stdout+stderr of the calling (child) process to path.
void redirect_output(const std::string &path, bool append)
{
	int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0600);
	int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null >= 0)
		::dup2(null, STDIN_FILENO);
	if (fd >= 0) {
		::dup2(fd, STDOUT_FILENO);
		::dup2(fd, STDERR_FILENO);
	}
}

Status ensure_run_dir(const Args &a)
{
	std::string d = a.run_dir();
	struct stat st;
	bool existed = ::stat(d.c_str(), &st) == 0;
	SLS_TRY(make_dirs(d, 0700));
	if (!existed && ::chmod(d.c_str(), 0700) < 0)
		return errno_error("chmod " + d);
	return {};
}

// Starts slsvirtd unless its socket answers. retain: its --retain (0 = its default).
Status ensure_hostd(const Args &a, unsigned retain = 0)
{
	const std::string rd = a.run_dir();
	const std::string sock = rd + "/slsvirtd.sock";
	if (socket_answers(sock))
		return {};
	std::string bin = env_or("SLSVIRT_HOSTD", "");
	if (bin.empty())
		bin = self_dir() + "/slsvirtd";
	if (access(bin.c_str(), X_OK) < 0)
		return make_error(-ENOENT, "slsvirtd not found at %s (set SLSVIRT_HOSTD)", bin.c_str());
	const std::string log = rd + "/slsvirtd.log";
	std::vector<std::string> argv = {bin,	  "--socket", sock,    "--store-root", a.store_root(), "--daemonize",
					 "--pidfile", rd + "/slsvirtd.pid", "--log", log};
	if (retain)
		argv.insert(argv.end(), {"--retain", std::to_string(retain)});
	pid_t pid = fork();
	if (pid < 0)
		return errno_error("fork");
	if (pid == 0) {
		redirect_output(log, true);
		std::vector<char *> av;
		for (auto &s : argv)
			av.push_back(s.data());
		av.push_back(nullptr);
		execv(av[0], av.data());
		_exit(127);
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return make_error(-EIO, "slsvirtd failed to start (status %d); log %s:\n%s", status, log.c_str(),
				  tail_of(log).c_str());
	for (int i = 0; i < 100; i++) {
		if (socket_answers(sock))
			return {};
		sleep_ms(50);
	}
	return make_error(-ETIMEDOUT, "slsvirtd started but %s does not answer; log %s", sock.c_str(), log.c_str());
}

// The device's (and QMP sls-start's) longest period (SLSVIRT_MAX_PERIOD_MS).
constexpr unsigned kMaxPeriodMs = 1000;

constexpr std::string_view kMachine = "q35,sata=off,smbus=off,vmport=off";
constexpr std::string_view kMachineGlobal = "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off";

// The QEMU arguments that attach VM's slsvirt-pci device to the run dir's slsvirtd.
std::vector<std::string> device_argv(const Args &a, const std::string &vm, unsigned period_ms)
{
	return {"-device", "slsvirt-pci,id=sls0,vm=" + vm + ",socket=" + a.run_dir() + "/slsvirtd.sock" +
				   (period_ms ? ",period-ms=" + std::to_string(period_ms) : "")};
}

std::vector<std::string> qemu_argv(const Args &a, const std::string &vm, const VmConf &c,
				   const std::string &console, bool paused)
{
	const std::string rd = a.run_dir();
	// Every epoch's stop saves all device state: the machine leaves out
	// what a disk-less guest does not use and costs stop time (AHCI and
	// SMBus controllers, vmport, the 256-bus ACPI PCI hotplug state:
	// 33 -> 22 KB and about 0.2 ms per epoch). --qemu-arg -machine sata=on
	// etc. bring them back.
	// An -accel among the extra arguments (e.g. -accel kvm) replaces the
	// default: QEMU would take the first -accel that works, always tcg.
	const bool own_accel = std::find(c.extra_args.begin(), c.extra_args.end(), "-accel") != c.extra_args.end();
	std::vector<std::string> v = {c.qemu, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
				      "-machine", std::string(kMachine), "-global", std::string(kMachineGlobal),
				      "-cpu", "max", "-smp", std::to_string(c.smp), "-m", c.mem,
				      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot"};
	if (!own_accel)
		v.insert(v.end(), {"-accel", "tcg"});
	if (console.empty())
		v.insert(v.end(), {"-chardev", "stdio,id=con0"});
	else
		v.insert(v.end(), {"-chardev", "file,id=con0,path=" + console});
	v.insert(v.end(), {"-serial", "chardev:con0", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
			   "-kernel", c.kernel, "-initrd", c.initrd, "-append", c.append});
	auto dev = device_argv(a, vm, c.period_ms);
	v.insert(v.end(), dev.begin(), dev.end());
	v.insert(v.end(), {"-qmp", "unix:" + rd + "/" + vm + ".qmp,server=on,wait=off", "-pidfile", rd + "/" + vm + ".pid"});
	if (paused)
		v.push_back("-S");
	v.insert(v.end(), c.extra_args.begin(), c.extra_args.end());
	return v;
}

[[noreturn]] void exec_argv(std::vector<std::string> argv)
{
	std::vector<char *> av;
	for (auto &s : argv)
		av.push_back(s.data());
	av.push_back(nullptr);
	execv(av[0], av.data());
	fprintf(stderr, "slsctl: error: exec %s: %s\n", av[0], strerror(errno));
	_exit(127);
}

// Forks QEMU. detached: own session, output to <run-dir>/<vm>.qemu.log.
Result<pid_t> spawn_qemu(const Args &a, const std::string &vm, const std::vector<std::string> &argv, bool detached)
{
	pid_t pid = fork();
	if (pid < 0)
		return errno_error("fork");
	if (pid == 0) {
		if (detached) {
			setsid();
			redirect_output(a.run_dir() + "/" + vm + ".qemu.log", false);
		}
		exec_argv(argv);
	}
	return pid;
}

// Waits until QEMU's QMP socket answers (or QEMU exits).
Result<QmpClient> wait_qmp(const Args &a, const std::string &vm, pid_t pid, int timeout_ms)
{
	const uint64_t deadline = mono_ms() + static_cast<uint64_t>(timeout_ms);
	std::string last;
	while (mono_ms() < deadline) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid) {
			std::string log = a.run_dir() + "/" + vm + ".qemu.log";
			return make_error(-ECHILD, "QEMU exited (status %d) before its QMP socket answered%s%s",
					  WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
					  access(log.c_str(), R_OK) == 0 ? "; its log:\n" : "",
					  access(log.c_str(), R_OK) == 0 ? tail_of(log).c_str() : "");
		}
		if (socket_answers(qmp_path(a, vm))) {
			auto q = QmpClient::connect(qmp_path(a, vm), 30000);
			if (q)
				return q;
			last = q.message();
		}
		// QEMU is up in tens of ms: a coarse poll would be most of a
		// restore's start (a failed connect costs microseconds).
		sleep_ms(1);
	}
	return make_error(-ETIMEDOUT, "QMP socket %s did not answer within %d ms%s%s", qmp_path(a, vm).c_str(),
			  timeout_ms, last.empty() ? "" : ": ", last.c_str());
}

int wait_child_exit(pid_t pid)
{
	int status = 0;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return 1;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

Result<std::string> need_vm(const Args &a)
{
	if (a.positional.size() != 1)
		return make_error(-EINVAL, "expected exactly one VM name (see slsctl %s --help)", a.cmd->name);
	SLS_TRY(check_vm_name(a.positional[0]));
	return a.positional[0];
}

// --epoch N (N >= 1) of restore/verify; 0 when the option is absent.
Result<uint64_t> epoch_option(const Args &a)
{
	if (!a.has("--epoch"))
		return uint64_t{0};
	auto n = parse_number("--epoch", a.get("--epoch"));
	if (!n)
		return n.error();
	if (*n == 0)
		return make_error(-EINVAL, "--epoch must be >= 1");
	return static_cast<uint64_t>(*n);
}

std::string fmt_time(uint64_t realtime_ns)
{
	if (!realtime_ns)
		return "-";
	time_t t = static_cast<time_t>(realtime_ns / 1000000000ull);
	struct tm tm;
	localtime_r(&t, &tm);
	char b[64];
	strftime(b, sizeof(b), "%Y-%m-%d %H:%M:%S", &tm);
	return strf("%s.%03llu", b, static_cast<unsigned long long>(realtime_ns / 1000000 % 1000));
}

std::string status_text(const SegmentInfo &s)
{
	if (s.status == SegmentStatus::valid)
		return "valid";
	std::string d = s.detail;
	if (s.status == SegmentStatus::torn && d.find("no commit record") != std::string::npos)
		return "torn (no commit record)";
	return std::string(to_string(s.status)) + " (" + d + ")";
}

// ---- subcommands ----

int cmd_run(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	VmConf c;
	c.qemu = a.qemu();
	c.kernel = a.get("--kernel", env_or("SLSVIRT_KERNEL", ""));
	c.initrd = a.get("--initrd", env_or("SLSVIRT_INITRD", ""));
	c.append = a.get("--append", "console=ttyS0 quiet panic=-1");
	c.mem = a.get("--mem", "256M");
	auto smp = parse_number("--smp", a.get("--smp", "1"));
	if (!smp || *smp < 1 || *smp > 256)
		return fail(smp ? "--smp must be 1..256" : smp.message());
	c.smp = static_cast<unsigned>(*smp);
	c.extra_args = a.all("--qemu-arg");
	auto period = parse_number("--period-ms", a.get("--period-ms", "0"));
	if (!period || *period > 3600000)
		return fail(period ? "--period-ms must be 0..3600000" : period.message());
	c.period_ms = static_cast<unsigned>(*period);
	if (c.qemu.empty())
		return fail("no QEMU binary: pass --qemu PATH or set SLSVIRT_QEMU");
	if (c.kernel.empty() || c.initrd.empty())
		return fail("no guest kernel/initrd: pass --kernel K --initrd I or set SLSVIRT_KERNEL/SLSVIRT_INITRD");
	if (pid_t p = live_qemu(a, *vm))
		return fail(strf("VM '%s' is already running (QEMU pid %d)", vm->c_str(), static_cast<int>(p)));
	if (Status s = ensure_run_dir(a); !s.ok())
		return fail(s.message());
	if (Status s = ensure_hostd(a); !s.ok())
		return fail(s.message());
	auto store = Store::open(a.store_root(), *vm, true);
	if (!store)
		return fail(store.message());
	if (Status s = save_vm_conf(store->vm_dir() + "/vm.conf", c); !s.ok())
		return fail(s.message());
	const bool detach = a.has("--detach");
	std::string console = a.get("--console", detach ? a.run_dir() + "/" + *vm + ".console" : "");
	auto argv = qemu_argv(a, *vm, c, console, false);
	if (!detach)
		exec_argv(argv);	// foreground: slsctl's exit status is QEMU's
	auto pid = spawn_qemu(a, *vm, argv, true);
	if (!pid)
		return fail(pid.message());
	auto q = wait_qmp(a, *vm, *pid, 60000);
	if (!q)
		return fail(q.message());
	printf("%d\n", static_cast<int>(*pid));
	return 0;
}

// For a manager that starts QEMU itself (the libvirt hook, libvirt/): make
// sure slsvirtd runs and VM's store exists, then print the arguments that
// attach the device, one per line. The caller passes them to QEMU.
int cmd_prepare(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	auto period = parse_number("--period-ms", a.get("--period-ms", "0"));
	if (!period || *period > kMaxPeriodMs)
		return fail(period ? strf("--period-ms must be 0..%u", kMaxPeriodMs) : period.message());
	auto retain = parse_number("--retain", a.get("--retain", "0"));
	if (!retain || *retain > 1000000)
		return fail(retain ? "--retain must be 1..1000000 (0: slsvirtd's default)" : retain.message());
	if (Status s = ensure_run_dir(a); !s.ok())
		return fail(s.message());
	if (Status s = ensure_hostd(a, static_cast<unsigned>(*retain)); !s.ok())
		return fail(s.message());
	auto store = Store::open(a.store_root(), *vm, true);
	if (!store)
		return fail(store.message());
	for (const auto &arg : device_argv(a, *vm, static_cast<unsigned>(*period)))
		printf("%s\n", arg.c_str());
	return 0;
}

int cmd_checkpoint(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	auto timeout = parse_seconds("--timeout", a.get("--timeout", "60"));
	if (!timeout)
		return fail(timeout.message());
	auto q = QmpClient::connect(qmp_path(a, *vm), 10000);
	if (!q)
		return fail(q.message());
	auto r = q->execute("sls-checkpoint");
	if (!r)
		return fail(r.message());
	if (!r->contains("epoch") || !(*r)["epoch"].is_number_unsigned())
		return fail("sls-checkpoint: reply has no epoch: " + r->dump());
	const uint64_t epoch = (*r)["epoch"].get<uint64_t>();
	const uint64_t deadline = mono_ms() + static_cast<uint64_t>(*timeout * 1000);
	for (;;) {
		auto s = q->execute("query-sls");
		if (!s)
			return fail(s.message());
		uint64_t durable = s->value("durable-epoch", 0ull), failed = s->value("failed-epoch", 0ull);
		if (durable >= epoch) {
			printf("epoch %llu durable\n", static_cast<unsigned long long>(epoch));
			return 0;
		}
		if (failed >= epoch)
			return fail(strf("epoch %llu failed: %s", static_cast<unsigned long long>(epoch),
					 s->value("last-error", std::string("unknown error")).c_str()));
		if (mono_ms() > deadline)
			return fail(strf("epoch %llu not durable after %.1f s (durable epoch %llu)",
					 static_cast<unsigned long long>(epoch), *timeout,
					 static_cast<unsigned long long>(durable)));
		sleep_ms(10);
	}
}

// Where a lazily restored VM's RAM lives: a private mapping of a file in
// tmpfs. Pages the restore loads go into the file's page cache, where every
// VM mapping the same file (clones of one epoch) shares them until it
// writes. The file is unlinked once the QEMUs have mapped it.
std::string image_dir() { return env_or("SLSVIRT_IMAGE_DIR", "/dev/shm"); }

Result<std::string> make_image_file(const std::string &vm, uint64_t epoch)
{
	std::string path = strf("%s/slsvirt-%s-%llu.%d.ram", image_dir().c_str(), vm.c_str(),
				static_cast<unsigned long long>(epoch), static_cast<int>(getpid()));
	UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
	if (!fd.valid())
		return errno_error("create RAM image file " + path);
	return path;
}

std::vector<std::string> lazy_ram_args(const VmConf &c, const std::string &image)
{
	// q35's RAM block is "pc.ram" whatever backs it: the epoch's layout matches.
	return {"-object", "memory-backend-file,id=pc.ram,size=" + c.mem + ",mem-path=" + image + ",share=off",
		"-machine", "memory-backend=pc.ram"};
}

struct RestoreSource {
	std::string vm;			// store to read
	uint64_t epoch = 0;
	bool other_store = false;	// a clone's branch point: RESTORE with source
	size_t chain_len = 0;		// segments in the epoch's chain
};

// An epoch a restore to an older one left behind (Store::catalog).
std::string rewound_text(const EpochView &v)
{
	return strf("another timeline (epoch %llu was restored after it)",
		    static_cast<unsigned long long>(v.rewound_to));
}

// Chooses the epoch to restore: the requested one, or the newest restorable
// one on the VM's current timeline (a restore of an older epoch starts a new
// one: branch.hpp Rewind). eager: every page of its chain verifies now (a lazy restore checks
// each page when it is loaded). Prints what it skipped.
Result<SegmentInfo> choose_epoch(const Store &store, uint64_t want, bool eager, size_t *chain_len = nullptr)
{
	auto views = store.catalog(ScanDepth::structure);
	if (!views)
		return views.error();
	std::map<uint64_t, SegmentInfo> full_scans;
	auto chain_problem = [&](const EpochView &v) -> std::string {
		if (!v.restorable)
			return v.seg.status != SegmentStatus::valid ? status_text(v.seg) : "not restorable: " + v.why;
		for (uint64_t e : eager ? v.chain : std::vector<uint64_t>{}) {
			if (!full_scans.count(e))
				full_scans[e] = store.scan(e, ScanDepth::full);
			const SegmentInfo &f = full_scans[e];
			if (f.status != SegmentStatus::valid)
				return e == v.seg.epoch ? status_text(f)
							: strf("not restorable: chain segment %llu is %s",
							       static_cast<unsigned long long>(e), status_text(f).c_str());
		}
		return "";
	};
	std::optional<SegmentInfo> chosen;
	std::vector<std::pair<SegmentInfo, std::string>> skipped;
	for (auto it = views->rbegin(); it != views->rend() && !chosen; ++it) {
		const SegmentInfo &s = it->seg;
		if (want && s.epoch > want) {
			skipped.push_back({s, s.status == SegmentStatus::valid ? "valid" : status_text(s)});
			continue;
		}
		if (want && s.epoch < want)
			break;
		if (!want && it->rewound_to) {
			skipped.push_back({s, rewound_text(*it)});
			continue;
		}
		std::string problem = chain_problem(*it);
		if (problem.empty()) {
			chosen = s;
			if (chain_len)
				*chain_len = it->chain.size();
		}
		else if (want)
			return make_error(-EBADMSG, "epoch %llu is %s", static_cast<unsigned long long>(want),
					  problem.c_str());
		else
			skipped.push_back({s, problem});
	}
	if (!chosen) {
		for (const auto &[s, why] : skipped)
			fprintf(stderr, "epoch %llu: %s\n", static_cast<unsigned long long>(s.epoch), why.c_str());
		return make_error(-ENOENT, "%s",
				  want ? strf("epoch %llu does not exist for VM '%s'", static_cast<unsigned long long>(want),
					      store.vm().c_str())
						 .c_str()
				       : strf("VM '%s' has no valid epoch to restore%s", store.vm().c_str(),
					      other_timeline_hint(*views).c_str())
						 .c_str());
	}
	for (const auto &[s, why] : skipped)
		printf("epoch %llu: %s, %s\n", static_cast<unsigned long long>(s.epoch), why.c_str(),
		       why == "valid" ? "newer than --epoch, not used"
		       : why.starts_with("another timeline") ? "not used without --epoch"
							      : "ignored");
	return *chosen;
}

struct Started {
	pid_t pid = 0;
	uint64_t epoch = 0;
	uint64_t start_ms = 0;		// QEMU started -> QMP answers
	uint64_t restore_ms = 0;	// sls-restore
	uint64_t running_ms = 0;	// QEMU started -> cont returned (the guest runs)
};

// QMP sls-restore of src into a QEMU that waits with -S, then cont (unless
// --stopped). Returns the epoch restored.
Result<uint64_t> restore_into(const Args &a, QmpClient &q, const RestoreSource &src, bool lazy,
			      const std::string &working_set)
{
	q.set_timeout_ms(600000);
	nlohmann::json args = {{"epoch", src.epoch}, {"lazy", lazy}};
	if (src.other_store)
		args["source"] = src.vm;
	if (!working_set.empty())
		args["working-set"] = working_set;
	auto r = q.execute("sls-restore", args);
	if (!r)
		return r.error();
	if (!a.has("--stopped")) {
		auto c = q.execute("cont");
		if (!c)
			return c.error();
	}
	return r->is_object() ? r->value("epoch", src.epoch) : src.epoch;
}

// Starts QEMU for vm paused, restores src into it and lets it run.
Result<Started> start_restored(const Args &a, const std::string &vm, const VmConf &conf, const RestoreSource &src,
			       bool lazy, const std::string &image, const std::string &working_set, bool detach)
{
	std::string console = a.get("--console", detach ? a.run_dir() + "/" + vm + ".console" : "");
	auto argv = qemu_argv(a, vm, conf, console, true);
	if (lazy && !image.empty()) {
		auto extra = lazy_ram_args(conf, image);
		argv.insert(argv.end(), extra.begin(), extra.end());
	}
	Started st;
	const uint64_t t0 = mono_ms();
	auto pid = spawn_qemu(a, vm, argv, detach);
	if (!pid)
		return pid.error();
	st.pid = *pid;
	auto abort_start = [&](const std::string &msg) -> Error {
		kill(*pid, SIGTERM);	// the QEMU this command started, nothing else
		wait_child_exit(*pid);
		return make_error(-EIO, "%s", msg.c_str());
	};
	auto q = wait_qmp(a, vm, *pid, 60000);
	if (!q)
		return abort_start(q.message());
	const uint64_t t1 = mono_ms();
	auto ep = restore_into(a, *q, src, lazy, working_set);
	if (!ep)
		return abort_start(ep.message());
	st.epoch = *ep;
	st.start_ms = t1 - t0;
	st.running_ms = mono_ms() - t0;
	st.restore_ms = st.running_ms - st.start_ms;
	return st;
}

// A VM's source of truth for a restore: its own store, or -- a clone that
// has no durable epoch of its own yet -- the epoch it was cloned from.
Result<RestoreSource> restore_source(const Args &a, const Store &store, uint64_t want, bool eager)
{
	auto own = store.catalog(ScanDepth::structure);
	if (!own)
		return own.error();
	bool any_restorable = false;
	for (const auto &v : *own)
		any_restorable |= v.restorable;
	auto br = load_branch(store.vm_dir());
	if (!br)
		return br.error();
	if (!any_restorable && *br && !want) {
		const Branch &b = **br;
		printf("VM '%s' has no epoch of its own yet: restoring its branch point %s@%llu\n", store.vm().c_str(),
		       b.parent_vm.c_str(), static_cast<unsigned long long>(b.parent_epoch));
		auto parent = Store::open(a.store_root(), b.parent_vm, false);
		if (!parent)
			return parent.error();
		size_t chain_len = 0;
		auto chosen = choose_epoch(*parent, b.parent_epoch, eager, &chain_len);
		if (!chosen)
			return chosen.error();
		return RestoreSource{b.parent_vm, chosen->epoch, true, chain_len};
	}
	size_t chain_len = 0;
	auto chosen = choose_epoch(store, want, eager, &chain_len);
	if (!chosen)
		return chosen.error();
	printf("restoring epoch %llu (%s, captured %s, %llu pages, %llu bytes)%s\n",
	       static_cast<unsigned long long>(chosen->epoch), to_string(chosen->kind),
	       fmt_time(chosen->capture_realtime_ns).c_str(), static_cast<unsigned long long>(chosen->nr_pages),
	       static_cast<unsigned long long>(chosen->file_size), eager ? "" : ", lazily");
	return RestoreSource{store.vm(), chosen->epoch, false, chain_len};
}

// The RAM image a lazy restore of vm maps (a private mapping of a new file
// in image_dir()), or "" when the restore is eager or vm.conf names its own
// RAM backend. A shared RAM backend cannot be served lazily.
Result<std::string> lazy_image_for(const VmConf &conf, const std::string &vm, uint64_t epoch, bool eager)
{
	bool own_backend = false;	// the VM's config names its RAM backend itself
	for (const auto &x : conf.extra_args)
		own_backend |= x.find("memory-backend=") != std::string::npos;
	if (eager)
		return std::string();
	if (own_backend) {
		for (const auto &x : conf.extra_args)
			if (x.find("id=pc.ram") != std::string::npos && x.find("share=on") != std::string::npos)
				return make_error(-EINVAL, "the VM's RAM is a shared mapping (vm.conf: %s): a lazy restore "
						  "cannot serve it; use --eager", x.c_str());
		return std::string();
	}
	return make_image_file(vm, epoch);
}

// Before starting a QEMU for vm: none may run yet; vm.conf (--qemu
// overrides its binary), the run dir and slsvirtd.
Result<VmConf> prepare_qemu_start(const Args &a, const std::string &vm, const Store &store)
{
	if (pid_t p = live_qemu(a, vm))
		return make_error(-EBUSY, "a QEMU for VM '%s' is still running (pid %d); stop it first", vm.c_str(),
				  static_cast<int>(p));
	auto conf = load_vm_conf(store.vm_dir() + "/vm.conf");
	if (!conf)
		return conf.error();
	if (a.has("--qemu"))
		conf->qemu = a.qemu();
	SLS_TRY(ensure_run_dir(a));
	SLS_TRY(ensure_hostd(a));
	return conf;
}

// restore --prestarted: into the QEMU `slsctl prestart VM` left waiting.
int restore_prestarted(const Args &a, const std::string &vm, const RestoreSource &src, bool lazy,
		       const std::string &ws)
{
	pid_t pid = live_qemu(a, vm);
	if (!pid)
		return fail(strf("no QEMU is waiting for VM '%s' (start one with: slsctl prestart %s)", vm.c_str(),
				 vm.c_str()));
	const uint64_t t0 = mono_ms();
	auto q = QmpClient::connect(qmp_path(a, vm), 5000);
	if (!q)
		return fail(q.message());
	const uint64_t t1 = mono_ms();
	auto st = q->execute("query-status");
	if (!st)
		return fail(st.message());
	if (st->value("status", std::string()) != "prelaunch")
		return fail(strf("QEMU pid %d of VM '%s' is %s, not waiting for a restore", static_cast<int>(pid),
				 vm.c_str(), st->value("status", std::string("?")).c_str()));
	auto ep = restore_into(a, *q, src, lazy, ws);
	if (!ep)
		return fail(strf("restore into QEMU pid %d: %s (it is still waiting)", static_cast<int>(pid),
				 ep.message().c_str()));
	const uint64_t t2 = mono_ms();
	printf("restored epoch %llu%s into prestarted QEMU pid %d; to running: %llu ms (QMP connect %llu ms, "
	       "restore %llu ms)\n%d\n",
	       static_cast<unsigned long long>(*ep), lazy ? " lazily" : "", static_cast<int>(pid),
	       static_cast<unsigned long long>(t2 - t0), static_cast<unsigned long long>(t1 - t0),
	       static_cast<unsigned long long>(t2 - t1), static_cast<int>(pid));
	return 0;
}

// Starts VM's QEMU paused (-S) with nothing restored yet: `restore
// --prestarted` then restores into it, without QEMU's own start (tens of
// ms) -- a pool of such QEMUs, as a VMM that loads a snapshot into a
// running process. Always detached.
int cmd_prestart(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	auto store = Store::open(a.store_root(), *vm, false);
	if (!store)
		return fail(store.message());
	auto conf = prepare_qemu_start(a, *vm, *store);
	if (!conf)
		return fail(conf.message());
	// Lazy is what a prestarted QEMU is for; --eager restores into it work too.
	auto image = lazy_image_for(*conf, *vm, 0, false);
	if (!image)
		return fail(image.message());
	auto argv = qemu_argv(a, *vm, *conf, a.get("--console", a.run_dir() + "/" + *vm + ".console"), true);
	if (!image->empty()) {
		auto extra = lazy_ram_args(*conf, *image);
		argv.insert(argv.end(), extra.begin(), extra.end());
	}
	const uint64_t t0 = mono_ms();
	auto pid = spawn_qemu(a, *vm, argv, true);
	if (!pid) {
		if (!image->empty())
			::unlink(image->c_str());
		return fail(pid.message());
	}
	auto q = wait_qmp(a, *vm, *pid, 60000);
	if (!image->empty())
		::unlink(image->c_str());	// QEMU has it mapped (or failed)
	if (!q) {
		kill(*pid, SIGTERM);	// the QEMU this command started, nothing else
		wait_child_exit(*pid);
		return fail(q.message());
	}
	printf("QEMU for VM '%s' waits for a restore (slsctl restore %s --prestarted); QMP up %llu ms\n%d\n",
	       vm->c_str(), vm->c_str(), static_cast<unsigned long long>(mono_ms() - t0), static_cast<int>(*pid));
	return 0;
}

int cmd_restore(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	auto epoch = epoch_option(a);
	if (!epoch)
		return fail(epoch.message());
	bool eager = a.has("--eager");
	const std::string ws = a.get("--working-set");
	if (eager && !ws.empty())
		return fail("--working-set needs a lazy restore (drop --eager)");
	auto store = Store::open(a.store_root(), *vm, false);
	if (!store)
		return fail(store.message());
	auto src = restore_source(a, *store, *epoch, eager);
	if (!src)
		return fail(src.message());
	// One fd per chain segment goes to QEMU in one message: a longer chain
	// (compaction behind a fast writer) is restored eagerly, after every
	// page of it verifies.
	if (!eager && src->chain_len > SLS_LAZY_MAX_FILES) {
		if (!ws.empty())
			return fail(strf("epoch %llu: its chain has %zu segments, more than a lazy restore serves (%u); "
					 "--working-set needs a lazy restore",
					 static_cast<unsigned long long>(src->epoch), src->chain_len, SLS_LAZY_MAX_FILES));
		printf("epoch %llu: its chain has %zu segments, more than a lazy restore serves (%u): restoring "
		       "eagerly\n",
		       static_cast<unsigned long long>(src->epoch), src->chain_len, SLS_LAZY_MAX_FILES);
		eager = true;
		src = restore_source(a, *store, src->epoch, true);
		if (!src)
			return fail(src.message());
	}
	fflush(stdout);

	if (a.has("--prestarted"))
		return restore_prestarted(a, *vm, *src, !eager, ws);
	auto conf = prepare_qemu_start(a, *vm, *store);
	if (!conf)
		return fail(conf.message());
	auto image = lazy_image_for(*conf, *vm, src->epoch, eager);
	if (!image)
		return fail(image.message());
	const bool detach = a.has("--detach");
	auto st = start_restored(a, *vm, *conf, *src, !eager, *image, ws, detach);
	if (!image->empty())
		::unlink(image->c_str());	// QEMU has it mapped (or failed)
	if (!st)
		return fail(st.message());
	printf("restored epoch %llu%s; QEMU start to running: %llu ms (QMP up %llu ms, restore %llu ms)\n",
	       static_cast<unsigned long long>(st->epoch), eager ? "" : " lazily",
	       static_cast<unsigned long long>(st->running_ms), static_cast<unsigned long long>(st->start_ms),
	       static_cast<unsigned long long>(st->restore_ms));
	fflush(stdout);
	if (detach) {
		printf("%d\n", static_cast<int>(st->pid));
		return 0;
	}
	return wait_child_exit(st->pid);
}

// VM@N -> (VM, N)
Result<std::pair<std::string, uint64_t>> parse_vm_at(const std::string &s)
{
	auto at = s.rfind('@');
	if (at == std::string::npos)
		return make_error(-EINVAL, "expected VM@EPOCH, got '%s'", s.c_str());
	std::string vm = s.substr(0, at);
	SLS_TRY(check_vm_name(vm));
	auto n = parse_number("epoch", s.substr(at + 1));
	if (!n)
		return n.error();
	if (!*n)
		return make_error(-EINVAL, "epoch must be >= 1");
	return std::pair<std::string, uint64_t>{vm, *n};
}

int cmd_clone(Args &a)
{
	if (a.positional.size() != 1)
		return fail("expected exactly one VM@EPOCH (see slsctl clone --help)");
	auto src = parse_vm_at(a.positional[0]);
	if (!src)
		return fail(src.message());
	const auto &[parent, epoch] = *src;
	auto count = parse_number("--count", a.get("--count", "1"));
	if (!count || *count < 1 || *count > 1000)
		return fail(count ? "--count must be 1..1000" : count.message());
	const std::string prefix = a.get("--prefix", parent + "-clone");
	const std::string ws = a.get("--working-set");
	auto pstore = Store::open(a.store_root(), parent, false);
	if (!pstore)
		return fail(pstore.message());
	auto chosen = choose_epoch(*pstore, epoch, false);
	if (!chosen)
		return fail(chosen.message());
	auto conf = load_vm_conf(pstore->vm_dir() + "/vm.conf");
	if (!conf)
		return fail(conf.message());
	if (a.has("--qemu"))
		conf->qemu = a.qemu();
	std::vector<std::string> names;
	for (unsigned long long i = 1; i <= *count; i++) {
		std::string n = strf("%s-%llu", prefix.c_str(), i);
		if (Status s = check_vm_name(n); !s.ok())
			return fail(s.message());
		struct stat st;
		if (::stat((a.store_root() + "/" + n).c_str(), &st) == 0)
			return fail(strf("VM '%s' exists already (%s/%s): pick another --prefix", n.c_str(),
					 a.store_root().c_str(), n.c_str()));
		names.push_back(n);
	}
	if (Status s = ensure_run_dir(a); !s.ok())
		return fail(s.message());
	if (Status s = ensure_hostd(a); !s.ok())
		return fail(s.message());
	auto image = make_image_file(parent, epoch);	// one file: the clones share its pages
	if (!image)
		return fail(image.message());
	int rc = 0;
	for (const auto &n : names) {
		// The clone's own store: its config, where it came from, and a pin
		// that keeps the parent's epoch until the clone has one of its own.
		auto cs = Store::open(a.store_root(), n, true);
		Status s = cs ? save_vm_conf(cs->vm_dir() + "/vm.conf", *conf) : Status(cs.error());
		if (s.ok())
			s = save_branch(cs->vm_dir(), {parent, epoch});
		if (s.ok())
			s = add_pin(pstore->vm_dir(), n, epoch);
		if (!s.ok()) {
			rc = fail(strf("clone %s: %s", n.c_str(), s.message().c_str()));
			break;
		}
		auto st = start_restored(a, n, *conf, {parent, epoch, true}, true, *image, ws, true);
		if (!st) {
			rc = fail(strf("clone %s: %s", n.c_str(), st.message().c_str()));
			break;
		}
		printf("clone %s: pid %d, %s@%llu, QEMU start to running %llu ms\n", n.c_str(), static_cast<int>(st->pid),
		       parent.c_str(), static_cast<unsigned long long>(epoch),
		       static_cast<unsigned long long>(st->running_ms));
		fflush(stdout);
	}
	::unlink(image->c_str());
	return rc;
}

int cmd_working_set(Args &a)
{
	if (a.positional.size() != 2)
		return fail("expected VM FILE (see slsctl working-set --help)");
	if (Status s = check_vm_name(a.positional[0]); !s.ok())
		return fail(s.message());
	auto q = QmpClient::connect(qmp_path(a, a.positional[0]), 10000);
	if (!q)
		return fail(q.message());
	char *abs = realpath(".", nullptr);
	std::string path = a.positional[1];
	if (!path.empty() && path[0] != '/' && abs)
		path = std::string(abs) + "/" + path;
	free(abs);
	auto r = q->execute("sls-save-working-set", {{"path", path}});
	if (!r)
		return fail(r.message());
	auto info = q->execute("query-sls-restore");
	if (info && info->is_object())
		printf("working set of %s: %llu pages loaded so far, written to %s\n", a.positional[0].c_str(),
		       static_cast<unsigned long long>(info->value("pages-loaded", 0ull) + info->value("zero-pages", 0ull)),
		       path.c_str());
	return 0;
}

std::string kind_text(const SegmentInfo &s)
{
	if (s.status != SegmentStatus::valid)
		return "-";
	return s.merged ? "merged" : to_string(s.kind);	// merged: a delta compaction wrote on the root
}

std::string parent_text(const SegmentInfo &s)
{
	if (s.status != SegmentStatus::valid || s.kind != SegmentKind::delta)
		return "-";
	return std::to_string(s.parent_epoch);
}

int cmd_ls(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	auto store = Store::open(a.store_root(), *vm, false);
	if (!store)
		return fail(store.message());
	auto views = store->catalog(ScanDepth::structure);
	if (!views)
		return fail(views.message());
	if (a.has("--json")) {
		nlohmann::json out = nlohmann::json::array();
		for (const auto &v : *views) {
			const SegmentInfo &s = v.seg;
			nlohmann::json e = {{"epoch", s.epoch},
					    {"kind", kind_text(s)},
					    {"restorable", v.restorable},
					    {"status", to_string(s.status)},
					    {"pages", s.nr_pages},
					    {"bytes", s.file_size},
					    {"captured-ns", s.capture_realtime_ns},
					    {"captured", fmt_time(s.capture_realtime_ns)}};
			if (s.status == SegmentStatus::valid && s.kind == SegmentKind::delta)
				e["parent"] = s.parent_epoch;
			if (!v.restorable)
				e["why"] = v.why;
			e["timeline"] = v.rewound_to ? "other" : "current";
			if (v.rewound_to)
				e["rewound-to"] = v.rewound_to;
			out.push_back(std::move(e));
		}
		printf("%s\n", out.dump(2).c_str());
		return 0;
	}
	printf("%-8s %-6s %-8s %-10s %-8s %-8s %-12s %-23s %s\n", "EPOCH", "KIND", "PARENT", "RESTORABLE", "STATUS",
	       "PAGES", "BYTES", "CAPTURED", "DETAIL");
	for (const auto &v : *views) {
		const SegmentInfo &s = v.seg;
		std::string detail = v.restorable ? (v.chain.size() > 1 ? strf("chain of %zu from epoch %llu", v.chain.size(),
									       static_cast<unsigned long long>(v.chain.front()))
								    : "")
						  : v.why;
		if (v.rewound_to)
			detail = rewound_text(v) + (detail.empty() ? "" : "; " + detail);
		printf("%-8llu %-6s %-8s %-10s %-8s %-8llu %-12llu %-23s %s\n", static_cast<unsigned long long>(s.epoch),
		       kind_text(s).c_str(), parent_text(s).c_str(), v.restorable ? "yes" : "no", to_string(s.status),
		       static_cast<unsigned long long>(s.nr_pages), static_cast<unsigned long long>(s.file_size),
		       fmt_time(s.capture_realtime_ns).c_str(), detail.c_str());
	}
	if (views->empty())
		printf("(no epochs)\n");
	return 0;
}

int cmd_verify(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	auto store = Store::open(a.store_root(), *vm, false);
	if (!store)
		return fail(store.message());
	// Every segment's every crc, then chains over the fully verified segments.
	auto views = store->catalog(ScanDepth::full);
	if (!views)
		return fail(views.message());
	std::vector<const EpochView *> checked;
	auto epoch = epoch_option(a);
	if (!epoch)
		return fail(epoch.message());
	const uint64_t want = *epoch;
	if (want) {
		for (const auto &v : *views)
			if (v.seg.epoch == want)
				checked.push_back(&v);
		if (checked.empty()) {
			printf("epoch %llu: missing\n1 checked, 1 bad\n", static_cast<unsigned long long>(want));
			return 1;
		}
	} else {
		for (const auto &v : *views)
			checked.push_back(&v);
	}
	if (checked.empty())
		return fail("no epochs to verify");
	int bad = 0;
	for (const EpochView *v : checked) {
		const SegmentInfo &s = v->seg;
		std::string what;
		if (s.status != SegmentStatus::valid)
			what = status_text(s);
		else if (!v->restorable)
			what = "not restorable: " + v->why;
		else
			what = strf("ok (%s%s)", kind_text(s).c_str(),
				    v->chain.size() > 1 ? strf(", chain of %zu from epoch %llu", v->chain.size(),
							       static_cast<unsigned long long>(v->chain.front()))
								  .c_str()
							: "");
		if (v->rewound_to)
			what += "; " + rewound_text(*v);
		printf("epoch %llu: %s\n", static_cast<unsigned long long>(s.epoch), what.c_str());
		bad += !v->restorable;
	}
	// What a restore without --epoch takes (on the current timeline).
	uint64_t newest = 0;
	for (const auto &v : *views)
		if (v.restorable && !v.rewound_to)
			newest = v.seg.epoch;
	printf("%zu checked, %d bad\n", checked.size(), bad);
	if (newest)
		printf("newest restorable epoch: %llu\n", static_cast<unsigned long long>(newest));
	else
		printf("no restorable epoch\n");
	return bad ? 1 : 0;
}

// query-sls as a table: durations in ms, bandwidth in MiB/s, the stop-time
// histogram as bars.
void print_stats(const nlohmann::json &s)
{
	for (auto it = s.begin(); it != s.end(); ++it) {
		const std::string &k = it.key();
		if (k == "stop-histogram")
			continue;
		std::string v = it->is_string() ? it->get<std::string>() : it->dump();
		if (it->is_number() && (k.find("-ns") != std::string::npos))
			v += strf(" (%.3f ms)", it->get<double>() / 1e6);
		else if (it->is_number() && k == "write-bandwidth")
			v += strf(" (%.1f MiB/s)", it->get<double>() / (1 << 20));
		printf("%-20s %s\n", k.c_str(), v.c_str());
	}
	auto h = s.find("stop-histogram");
	if (h == s.end() || !h->is_array() || h->empty())
		return;
	uint64_t total = 0, maxc = 0;
	for (const auto &b : *h) {
		uint64_t c = b.is_object() ? b.value("count", 0ull) : 0;
		total += c;
		maxc = std::max(maxc, c);
	}
	printf("stop-time histogram (%llu epochs):\n", static_cast<unsigned long long>(total));
	for (const auto &b : *h) {
		if (!b.is_object())
			continue;
		uint64_t c = b.value("count", 0ull);
		std::string le = b.contains("le-us") && b["le-us"].is_number() ? strf("<= %8.3f ms", b["le-us"].get<double>() / 1e3)
									     : "       > last";
		int bar = maxc ? static_cast<int>(40.0 * static_cast<double>(c) / static_cast<double>(maxc) + 0.5) : 0;
		printf("  %s %8llu %5.1f%% %s\n", le.c_str(), static_cast<unsigned long long>(c),
		       total ? 100.0 * static_cast<double>(c) / static_cast<double>(total) : 0.0, std::string(static_cast<size_t>(bar), '#').c_str());
	}
}

int cmd_stats(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	double watch = 0;
	if (a.has("--watch")) {
		auto w = parse_seconds("--watch", a.get("--watch"));
		if (!w)
			return fail(w.message());
		watch = *w;
	}
	auto q = QmpClient::connect(qmp_path(a, *vm), 10000);
	if (!q)
		return fail(q.message());
	for (;;) {
		auto s = q->execute("query-sls");
		if (!s)
			return fail(s.message());
		if (a.has("--json")) {
			printf("%s\n", s->dump(2).c_str());
		} else {
			if (watch > 0)
				printf("--- %s\n", fmt_time(static_cast<uint64_t>(time(nullptr)) * 1000000000ull).c_str());
			print_stats(*s);
		}
		fflush(stdout);
		if (watch <= 0)
			return 0;
		sleep_ms(static_cast<unsigned>(watch * 1000));
	}
}

// SIZE: bytes with an optional binary suffix K, M, G or T (QEMU's -m syntax, "512M").
Result<uint64_t> parse_size(const std::string &opt, const std::string &v)
{
	char *end = nullptr;
	errno = 0;
	unsigned long long n = strtoull(v.c_str(), &end, 10);
	if (v.empty() || v[0] == '-' || errno || end == v.c_str())
		return make_error(-EINVAL, "%s: '%s' is not a size (e.g. 512M)", opt.c_str(), v.c_str());
	unsigned shift = 0;
	std::string suffix = end;
	if (suffix == "K" || suffix == "k")
		shift = 10;
	else if (suffix == "M" || suffix == "m")
		shift = 20;
	else if (suffix == "G" || suffix == "g")
		shift = 30;
	else if (suffix == "T" || suffix == "t")
		shift = 40;
	else if (!suffix.empty() && suffix != "B" && suffix != "b")
		return make_error(-EINVAL, "%s: '%s': unknown suffix (K, M, G or T)", opt.c_str(), v.c_str());
	if (shift && n > (~0ull >> shift))
		return make_error(-ERANGE, "%s: '%s' is too large", opt.c_str(), v.c_str());
	return static_cast<uint64_t>(n << shift);
}

std::string fmt_bytes(uint64_t b)
{
	if (b >= (1ull << 30))
		return strf("%.2f GiB", static_cast<double>(b) / (1ull << 30));
	if (b >= (1ull << 20))
		return strf("%.1f MiB", static_cast<double>(b) / (1ull << 20));
	return strf("%.1f KiB", static_cast<double>(b) / 1024);
}

// VmRSS of @pid in bytes (0 if unknown).
uint64_t process_rss(pid_t pid)
{
	auto st = read_small_file(strf("/proc/%ld/status", static_cast<long>(pid)), 1 << 16);
	if (!st)
		return 0;
	auto at = st->find("VmRSS:");
	return at == std::string::npos ? 0 : strtoull(st->c_str() + at + 6, nullptr, 10) * 1024;
}

void print_mem(const nlohmann::json &m, pid_t pid)
{
	auto u = [&](const char *k) { return m.contains(k) ? m[k].get<uint64_t>() : 0; };
	uint64_t ram = u("ram-size");
	printf("guest RAM        %s\n", fmt_bytes(ram).c_str());
	printf("target           %s in use (%s released asked)\n", fmt_bytes(u("target-size")).c_str(),
	       fmt_bytes(ram - std::min(ram, u("target-size"))).c_str());
	printf("ceiling          %s\n", fmt_bytes(u("ceiling")).c_str());
	if (m.contains("guest-free"))
		printf("guest reports    %s free, %s used\n", fmt_bytes(u("guest-free")).c_str(),
		       fmt_bytes(u("guest-used")).c_str());
	else
		printf("guest reports    nothing yet (driver not loaded?)\n");
	printf("released         %s in %llu ranges (%llu releases, %llu reclaims)\n", fmt_bytes(u("released")).c_str(),
	       static_cast<unsigned long long>(u("released-ranges")), static_cast<unsigned long long>(u("releases")),
	       static_cast<unsigned long long>(u("reclaims")));
	printf("host resident    %s of guest RAM", fmt_bytes(u("resident")).c_str());
	if (uint64_t rss = pid ? process_rss(pid) : 0)
		printf("; QEMU RSS %s", fmt_bytes(rss).c_str());
	printf("\n");
}

int cmd_mem(Args &a)
{
	auto vm = need_vm(a);
	if (!vm)
		return fail(vm.message());
	std::optional<uint64_t> target, ceiling;
	double wait_s = 0;
	if (a.has("--target")) {
		auto t = parse_size("--target", a.get("--target"));
		if (!t)
			return fail(t.message());
		target = *t;
	}
	if (a.has("--ceiling")) {
		auto c = parse_size("--ceiling", a.get("--ceiling"));
		if (!c)
			return fail(c.message());
		ceiling = *c;
	}
	if (a.has("--wait")) {
		if (!target)
			return fail("--wait needs --target");
		auto w = parse_seconds("--wait", a.get("--wait"));
		if (!w)
			return fail(w.message());
		wait_s = *w;
	}
	auto q = QmpClient::connect(qmp_path(a, *vm), 10000);
	if (!q)
		return fail(q.message());
	// The ceiling first: a target below a lowered ceiling is then asked for once.
	if (ceiling) {
		auto r = q->execute("sls-mem-ceiling", {{"size", *ceiling}});
		if (!r)
			return fail("sls-mem-ceiling: " + r.message());
	}
	uint64_t t0 = mono_ms();
	if (target) {
		auto r = q->execute("sls-mem-target", {{"size", *target}});
		if (!r)
			return fail("sls-mem-target: " + r.message());
	}
	auto m = q->execute("query-sls-mem");
	if (!m)
		return fail("query-sls-mem: " + m.message());
	if (wait_s > 0) {
		// Until the guest has released what the target asks (or taken it back).
		uint64_t want = (*m)["ram-size"].get<uint64_t>() - std::min((*m)["ram-size"].get<uint64_t>(), *target);
		bool shrink = (*m)["released"].get<uint64_t>() < want;
		for (;;) {
			uint64_t rel = (*m)["released"].get<uint64_t>();
			if (shrink ? rel >= want : rel <= want)
				break;
			if (mono_ms() - t0 > static_cast<uint64_t>(wait_s * 1000)) {
				print_mem(*m, live_qemu(a, *vm));
				return fail(strf("the guest did not reach the target within %.1f s (released %s, asked %s)", wait_s,
						 fmt_bytes(rel).c_str(), fmt_bytes(want).c_str()));
			}
			sleep_ms(5);
			m = q->execute("query-sls-mem");
			if (!m)
				return fail("query-sls-mem: " + m.message());
		}
		printf("target reached in %llu ms\n", static_cast<unsigned long long>(mono_ms() - t0));
	}
	if (a.has("--json"))
		printf("%s\n", m->dump(2).c_str());
	else
		print_mem(*m, live_qemu(a, *vm));
	return 0;
}

const Command kCommands[] = {
	{"run", "VM [options]",
	 "Start VM: ensures slsvirtd runs, saves the VM's config in <store-root>/VM/vm.conf and starts QEMU.\n"
	 "Foreground: console on stdout, exit status is QEMU's. --detach: print QEMU's pid once QMP answers.",
	 {{"--kernel", "FILE", "guest kernel (default $SLSVIRT_KERNEL)"},
	  {"--initrd", "FILE", "guest initramfs (default $SLSVIRT_INITRD)"},
	  {"--append", "CMDLINE", "whole kernel command line (default 'console=ttyS0 quiet panic=-1')"},
	  {"--mem", "SIZE", "guest RAM, QEMU -m syntax (default 256M)"},
	  {"--smp", "N", "vCPUs (default 1)"},
	  {"--detach", nullptr, "run in the background, console to <run-dir>/VM.console"},
	  {"--console", "FILE", "write the serial console to FILE"},
	  {"--period-ms", "N", "checkpoint every N ms (device property period-ms; 0 = on request only, default)"},
	  {"--qemu-arg", "ARG", "extra QEMU argument (repeatable); '-accel X' replaces the default '-accel tcg'", true}},
	 cmd_run},
	{"checkpoint", "VM [--timeout S]",
	 "Ask the VM for a checkpoint (QMP sls-checkpoint) and wait until it is durable.\n"
	 "Prints 'epoch N durable'; exit 1 if the epoch failed or timed out.",
	 {{"--timeout", "S", "seconds to wait (default 60)"}},
	 cmd_checkpoint},
	{"restore", "VM [--epoch N] [--eager] [--working-set FILE] [--detach] [--console FILE] [--prestarted]",
	 "Restore VM from its store: report which epoch is used and every torn/corrupt newer one,\n"
	 "start QEMU from vm.conf with -S, QMP sls-restore, cont. Refuses while a QEMU of VM runs.\n"
	 "Lazy by default: the guest runs at once, each RAM page is read from the store (and its crc\n"
	 "checked) when first touched; a corrupt page stops QEMU with an error naming epoch and page.\n"
	 "A clone without an epoch of its own restores the epoch it was cloned from.\n"
	 "Restoring an older epoch starts a new timeline: the epochs it left behind stay restorable\n"
	 "with --epoch, and a restore without --epoch (e.g. after a crash) does not pick them.",
	 {{"--epoch", "N", "epoch to restore (default: newest restorable on the current timeline)"},
	  {"--eager", nullptr, "verify every page and load all RAM before the guest runs"},
	  {"--prestarted", nullptr, "restore into the QEMU `slsctl prestart VM` left waiting (no QEMU start)"},
	  {"--working-set", "FILE", "load these pages in the background (slsctl working-set)"},
	  {"--stopped", nullptr, "leave the restored guest stopped (QMP cont runs it)"},
	  {"--detach", nullptr, "run in the background, console to <run-dir>/VM.console"},
	  {"--console", "FILE", "write the serial console to FILE"}},
	 cmd_restore},
	{"prestart", "VM [--console FILE]",
	 "Start VM's QEMU from vm.conf paused (-S), nothing restored, in the background: a later\n"
	 "`slsctl restore VM --prestarted` restores into it without waiting for QEMU to start.\n"
	 "Prints the pid.",
	 {{"--console", "FILE", "write the serial console to FILE (default <run-dir>/VM.console)"}},
	 cmd_prestart},
	{"clone", "VM@N [--count K] [--prefix NAME] [--working-set FILE]",
	 "Start K VMs NAME-1..NAME-K from epoch N of VM, lazily, all mapping one RAM image: pages\n"
	 "they have not written are shared on the host. Each gets its own store (its epochs go there,\n"
	 "never into VM's), a new device generation, and pins VM@N until it has an epoch of its own.",
	 {{"--count", "K", "number of clones (default 1)"},
	  {"--prefix", "NAME", "clone names NAME-1..NAME-K (default VM-clone)"},
	  {"--working-set", "FILE", "load these pages in the background in every clone"}},
	 cmd_clone},
	{"working-set", "VM FILE",
	 "Write the pages VM's lazy restore loaded so far, in the order they were touched, to FILE\n"
	 "(for restore/clone --working-set).",
	 {},
	 cmd_working_set},
	{"ls", "VM [--json]",
	 "List the VM's epochs: kind (full/delta/merged/base), parent, restorable (and why not), status, pages,\n"
	 "bytes, capture time. A delta is restorable only if its whole chain down to a full/base is.",
	 {{"--json", nullptr, "print a JSON array (what virsh sls-list and sls-info read)"}},
	 cmd_ls},
	{"prepare", "VM [--period-ms N] [--retain N]",
	 "For a manager that starts QEMU itself (the libvirt hook): start slsvirtd for the store root\n"
	 "unless it answers, create the VM's store, and print the QEMU arguments that attach the\n"
	 "slsvirt-pci device, one per line.",
	 {{"--period-ms", "N", "checkpoint every N ms (0 = on request only, default)"},
	  {"--retain", "N", "slsvirtd --retain N when this starts it (default: slsvirtd's)"}},
	 cmd_prepare},
	{"verify", "VM [--epoch N]",
	 "Check every record and every page crc of the VM's epochs (or one) and every epoch's chain;\n"
	 "report the newest restorable epoch. Exit 0 only if all checked epochs are restorable.",
	 {{"--epoch", "N", "verify only epoch N"}},
	 cmd_verify},
	{"stats", "VM [--json] [--watch S]",
	 "Show the VM's checkpoint statistics (QMP query-sls): epochs/s, stop time p50/p99 and its\n"
	 "histogram, pages per epoch, write bandwidth, backlog, adaptive period.",
	 {{"--json", nullptr, "print the raw JSON"}, {"--watch", "S", "repeat every S seconds"}},
	 cmd_stats},
	{"mem", "VM [--target SIZE] [--ceiling SIZE] [--wait S] [--json]",
	 "Memory elasticity: ask the guest to shrink or grow to --target SIZE of RAM in use (QMP\n"
	 "sls-mem-target), set the --ceiling SIZE it may never exceed, then show guest-reported\n"
	 "free/used, released bytes and ranges, and host RSS (QMP query-sls-mem). SIZE: 512M, 1G, ...",
	 {{"--target", "SIZE", "RAM the guest should keep in use"},
	  {"--ceiling", "SIZE", "most RAM the guest may use (reclaims beyond it are refused)"},
	  {"--wait", "S", "with --target: wait up to S seconds until the guest released that much"},
	  {"--json", nullptr, "print the raw JSON"}},
	 cmd_mem},
};

void print_main_help()
{
	printf("usage: slsctl COMMAND [options]   (slsctl COMMAND --help for details)\n\ncommands:\n");
	for (const auto &c : kCommands)
		printf("  %-11s %s\n", c.name, c.synopsis);
	printf("\nenvironment: SLSVIRT_RUN_DIR, SLSVIRT_STORE_ROOT, SLSVIRT_QEMU, SLSVIRT_KERNEL,\n"
	       "             SLSVIRT_INITRD, SLSVIRT_HOSTD (path of slsvirtd)\n");
}

} // namespace

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		print_main_help();
		return argc < 2 ? 2 : 0;
	}
	const Command *cmd = nullptr;
	for (const auto &c : kCommands)
		if (!strcmp(argv[1], c.name))
			cmd = &c;
	if (!cmd) {
		fprintf(stderr, "slsctl: error: unknown command '%s'\n", argv[1]);
		print_main_help();
		return 2;
	}
	Args a;
	a.cmd = cmd;
	for (int i = 2; i < argc; i++) {
		std::string s = argv[i];
		if (s == "--help" || s == "-h") {
			print_help(*cmd);
			return 0;
		}
		if (s.size() < 2 || s.compare(0, 2, "--") != 0) {
			a.positional.push_back(s);
			continue;
		}
		std::string name = s, value;
		bool inline_value = false;
		if (auto eq = s.find('='); eq != std::string::npos) {
			name = s.substr(0, eq);
			value = s.substr(eq + 1);
			inline_value = true;
		}
		const OptSpec *spec = nullptr;
		for (const auto &o : cmd->opts)
			if (name == o.name)
				spec = &o;
		for (const auto &o : kCommonOpts)
			if (name == o.name)
				spec = &o;
		if (!spec) {
			fprintf(stderr, "slsctl %s: unknown option '%s' (see --help)\n", cmd->name, name.c_str());
			return 2;
		}
		if (spec->arg && !inline_value) {
			if (i + 1 >= argc) {
				fprintf(stderr, "slsctl %s: %s needs a value\n", cmd->name, name.c_str());
				return 2;
			}
			value = argv[++i];
		} else if (!spec->arg && inline_value) {
			fprintf(stderr, "slsctl %s: %s takes no value\n", cmd->name, name.c_str());
			return 2;
		}
		a.values[name].push_back(value);
	}
	signal(SIGPIPE, SIG_IGN);
	return cmd->fn(a);
}
