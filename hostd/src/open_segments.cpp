// Segment files held by lazily restored VMs (open_segments.hpp).
#include "slsvirt/open_segments.hpp"

#include <map>
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

} // namespace slsvirt::open_segments
