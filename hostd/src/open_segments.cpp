// Segment files held by lazily restored VMs (open_segments.hpp).
#include "slsvirt/open_segments.hpp"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <utility>

namespace slsvirt::open_segments {
namespace {

using Key = std::pair<dev_t, ino_t>;
std::multimap<Key, uint64_t> &holders()
{
	static std::multimap<Key, uint64_t> h;
	return h;
}

} // namespace

std::mutex &lock()
{
	static std::mutex mu;
	return mu;
}

void hold(uint64_t owner, const struct stat &st) { holders().emplace(Key{st.st_dev, st.st_ino}, owner); }

bool held(const struct stat &st) { return holders().count(Key{st.st_dev, st.st_ino}) != 0; }

void release(uint64_t owner)
{
	std::lock_guard lk(lock());
	auto &h = holders();
	for (auto it = h.begin(); it != h.end();)
		it = it->second == owner ? h.erase(it) : std::next(it);
}

size_t count()
{
	std::lock_guard lk(lock());
	return holders().size();
}

size_t adopt(const std::string &store_root)
{
	char real[PATH_MAX];
	if (!realpath(store_root.c_str(), real))
		return 0;	// no store yet: nothing anyone can hold
	const std::string prefix = std::string(real) + "/";
	const pid_t self = getpid();
	size_t n = 0;
	std::unique_ptr<DIR, int (*)(DIR *)> proc(opendir("/proc"), closedir);
	if (!proc)
		return 0;
	std::lock_guard lk(lock());
	while (struct dirent *pe = readdir(proc.get())) {
		char *end = nullptr;
		long pid = strtol(pe->d_name, &end, 10);
		if (!*pe->d_name || *end || pid <= 0 || pid == self)
			continue;
		const std::string fd_dir = std::string("/proc/") + pe->d_name + "/fd";
		std::unique_ptr<DIR, int (*)(DIR *)> fds(opendir(fd_dir.c_str()), closedir);
		if (!fds)
			continue;	// gone, or not ours to look at
		while (struct dirent *fe = readdir(fds.get())) {
			if (fe->d_name[0] == '.')
				continue;
			const std::string link = fd_dir + "/" + fe->d_name;
			char target[PATH_MAX];
			ssize_t len = readlink(link.c_str(), target, sizeof(target) - 1);
			if (len <= 0)
				continue;
			target[len] = 0;
			// <root>/<vm>/epochs/<file>: a segment file, given to this
			// process by a lazy restore (nothing else opens them).
			if (strncmp(target, prefix.c_str(), prefix.size()) ||
			    !strstr(target + prefix.size(), "/epochs/"))
				continue;
			struct stat st;
			if (::stat(link.c_str(), &st) < 0 || !S_ISREG(st.st_mode))
				continue;
			hold(static_cast<uint64_t>(pid), st);
			n++;
		}
	}
	return n;
}

} // namespace slsvirt::open_segments
