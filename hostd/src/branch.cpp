// Branch and pin records (branch.hpp). Both are small text files, written
// atomically and checksummed like vm.conf: "<MAGIC> 1 <crc32c hex>\n<body>".
#include "slsvirt/branch.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "slsvirt/crc32c.hpp"
#include "slsvirt/fd.hpp"
#include "slsvirt/log.hpp"
#include "slsvirt/store.hpp"

namespace slsvirt {
namespace {

constexpr const char *kBranchMagic = "SLSVBRANCH";
constexpr const char *kPinMagic = "SLSVPIN";
constexpr const char *kRewindMagic = "SLSVREWIND";

std::string framed(const char *magic, const std::string &body)
{
	return strf("%s 1 %08x\n", magic, crc32c(body.data(), body.size())) + body;
}

// The body of a framed file, or an error naming what is wrong.
Result<std::string> unframe(const char *magic, const std::string &path, size_t max = 4096)
{
	auto txt = read_small_file(path, max);
	if (!txt)
		return txt.error();
	auto nl = txt->find('\n');
	unsigned ver = 0, crc = 0;
	char m[16] = {};
	if (nl == std::string::npos || sscanf(txt->c_str(), "%15s %u %x", m, &ver, &crc) != 3 || strcmp(m, magic) ||
	    ver != 1)
		return make_error(-EBADMSG, "%s: not a version-1 %s file", path.c_str(), magic);
	std::string body = txt->substr(nl + 1);
	if (crc32c(body.data(), body.size()) != crc)
		return make_error(-EBADMSG, "%s: crc mismatch", path.c_str());
	return body;
}

std::string pin_dir(const std::string &vm_dir) { return vm_dir + "/pins"; }

} // namespace

Status save_branch(const std::string &vm_dir, const Branch &b)
{
	SLS_TRY(check_vm_name(b.parent_vm));
	return write_file_atomic(vm_dir + "/branch",
				 framed(kBranchMagic, strf("%s %llu\n", b.parent_vm.c_str(),
							   static_cast<unsigned long long>(b.parent_epoch))),
				 0600);
}

Result<std::optional<Branch>> load_branch(const std::string &vm_dir)
{
	const std::string path = vm_dir + "/branch";
	if (access(path.c_str(), F_OK) < 0 && errno == ENOENT)
		return std::optional<Branch>();
	auto body = unframe(kBranchMagic, path);
	if (!body)
		return body.error();
	char vm[64] = {};
	unsigned long long e = 0;
	if (sscanf(body->c_str(), "%63s %llu", vm, &e) != 2 || !e || !check_vm_name(vm).ok())
		return make_error(-EBADMSG, "%s: malformed", path.c_str());
	return std::optional<Branch>(Branch{vm, e});
}

Status add_pin(const std::string &parent_vm_dir, const std::string &child, uint64_t epoch)
{
	SLS_TRY(check_vm_name(child));
	SLS_TRY(make_dirs(pin_dir(parent_vm_dir), 0700));
	return write_file_atomic(pin_dir(parent_vm_dir) + "/" + child,
				 framed(kPinMagic, strf("%llu\n", static_cast<unsigned long long>(epoch))), 0600);
}

Status remove_pin(const std::string &parent_vm_dir, const std::string &child)
{
	SLS_TRY(check_vm_name(child));
	const std::string p = pin_dir(parent_vm_dir) + "/" + child;
	if (::unlink(p.c_str()) < 0 && errno != ENOENT)
		return errno_error("remove " + p);
	return fsync_dir(pin_dir(parent_vm_dir));
}

std::map<std::string, uint64_t> list_pins(const std::string &vm_dir)
{
	std::map<std::string, uint64_t> pins;
	DIR *d = opendir(pin_dir(vm_dir).c_str());
	if (!d)
		return pins;
	while (struct dirent *de = readdir(d)) {
		std::string n = de->d_name;
		if (!check_vm_name(n).ok() || n.ends_with(".tmp"))
			continue;	// ".", "..", an atomic write's temp file
		auto body = unframe(kPinMagic, pin_dir(vm_dir) + "/" + n);
		unsigned long long e = 0;
		if (!body || sscanf(body->c_str(), "%llu", &e) != 1 || !e) {
			SLS_LOG_WARN("%s/%s: unreadable pin (%s): keeping every epoch", pin_dir(vm_dir).c_str(), n.c_str(),
				     body ? "malformed" : body.message().c_str());
			e = UINT64_MAX;
		}
		pins[n] = e;
	}
	closedir(d);
	return pins;
}

std::set<uint64_t> pinned_epochs(const std::string &vm_dir)
{
	std::set<uint64_t> s;
	for (const auto &[child, e] : list_pins(vm_dir))
		s.insert(e);
	return s;
}

// A rewinds file is one line per rewind; 1 MiB holds ~40000 of them.
constexpr size_t kRewindsMax = 1 << 20;

Result<std::vector<Rewind>> load_rewinds(const std::string &vm_dir)
{
	const std::string path = vm_dir + "/rewinds";
	std::vector<Rewind> out;
	if (access(path.c_str(), F_OK) < 0 && errno == ENOENT)
		return out;
	auto body = unframe(kRewindMagic, path, kRewindsMax);
	if (!body)
		return body.error();
	size_t pos = 0;
	while (pos < body->size()) {
		size_t nl = body->find('\n', pos);
		if (nl == std::string::npos)
			return make_error(-EBADMSG, "%s: last line not terminated", path.c_str());
		unsigned long long to = 0, newest = 0;
		char extra = 0;
		const std::string line = body->substr(pos, nl - pos);
		if (sscanf(line.c_str(), "%llu %llu %c", &to, &newest, &extra) != 2 || !to || newest < to ||
		    (!out.empty() && newest < out.back().newest))
			return make_error(-EBADMSG, "%s: malformed line '%s'", path.c_str(), line.c_str());
		out.push_back({to, newest});
		pos = nl + 1;
	}
	return out;
}

Status add_rewind(const std::string &vm_dir, const Rewind &r)
{
	if (!r.to || r.newest < r.to)
		return make_error(-EINVAL, "rewind to epoch %llu with newest %llu",
				  static_cast<unsigned long long>(r.to), static_cast<unsigned long long>(r.newest));
	auto all = load_rewinds(vm_dir);
	if (!all && all.code() != -EBADMSG)
		return all.error();
	if (!all) {
		// Readers ignore a damaged file already (Store::catalog); the new
		// record replaces it rather than blocking every restore.
		SLS_LOG_WARN("%s: replacing a damaged rewinds file with this rewind", all.message().c_str());
		all = std::vector<Rewind>();
	}
	all->push_back(r);
	std::string body;
	for (const auto &x : *all)
		body += strf("%llu %llu\n", static_cast<unsigned long long>(x.to),
			     static_cast<unsigned long long>(x.newest));
	if (body.size() > kRewindsMax - 64)
		return make_error(-EFBIG, "%s/rewinds: too many rewinds", vm_dir.c_str());
	return write_file_atomic(vm_dir + "/rewinds", framed(kRewindMagic, body), 0600);
}

const Rewind *abandoned_by(const std::vector<Rewind> &rewinds, uint64_t epoch)
{
	// Rewind k's timeline: the epochs written after it (> newest), and the
	// ancestry of the epoch it restored (`to`): the timeline `to` was
	// written on, up to `to`. `to` was written on the timeline of the last
	// earlier rewind whose `newest` it exceeds (none: the first timeline).
	size_t k = rewinds.size();
	while (k > 0) {
		const Rewind &r = rewinds[k - 1];
		if (epoch > r.newest)
			return nullptr;
		if (epoch > r.to)
			return &r;
		size_t j = k - 1;
		while (j > 0 && rewinds[j - 1].newest >= r.to)
			j--;
		k = j;
	}
	return nullptr;
}

} // namespace slsvirt
