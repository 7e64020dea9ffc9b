// sls-ram-export: writes the guest RAM of one stored epoch as raw bytes, so a
// test can compare it byte for byte with the RAM of a restored QEMU.
//
//   sls-ram-export --store-root DIR --vm VM [--epoch N] --out FILE [--block IDSTR]
//
// Epoch 0 or absent: the newest epoch the store would restore. Without
// --block, every RAM block in RAM_LAYOUT order, concatenated. Prints
// "epoch N" and one "block IDSTR offset OFF length LEN" line per block written.
// Reads through the store library's own loader (chains included), the code
// hostd uses for RESTORE. Stands in for `slsctl export` until that exists.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "slsvirt/store.hpp"

using namespace slsvirt;

namespace {

int die(const std::string &msg)
{
	fprintf(stderr, "sls-ram-export: %s\n", msg.c_str());
	return 1;
}

bool write_all(int fd, const unsigned char *p, uint64_t n)
{
	while (n) {
		ssize_t w = ::write(fd, p, n > (1u << 30) ? (1u << 30) : n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= static_cast<uint64_t>(w);
	}
	return true;
}

} // namespace

int main(int argc, char **argv)
{
	std::string root, vm, out, block;
	uint64_t epoch = 0;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		if (i + 1 >= argc)
			return die("usage: --store-root DIR --vm VM [--epoch N] --out FILE [--block IDSTR]");
		std::string v = argv[++i];
		if (a == "--store-root")
			root = v;
		else if (a == "--vm")
			vm = v;
		else if (a == "--out")
			out = v;
		else if (a == "--block")
			block = v;
		else if (a == "--epoch")
			epoch = strtoull(v.c_str(), nullptr, 10);
		else
			return die("unknown option " + a);
	}
	if (root.empty() || vm.empty() || out.empty())
		return die("usage: --store-root DIR --vm VM [--epoch N] --out FILE [--block IDSTR]");

	auto store = Store::open(root, vm, false);
	if (!store)
		return die(store.message());
	if (!epoch) {
		auto newest = store->newest_valid();
		if (!newest)
			return die("no restorable epoch: " + newest.message());
		epoch = newest->epoch;
	}
	SegmentInfo seg = store->scan(epoch, ScanDepth::structure);
	if (seg.status != SegmentStatus::valid)
		return die("epoch " + std::to_string(epoch) + " is " + to_string(seg.status) + ": " + seg.detail);
	if (seg.layout.empty())
		return die("epoch " + std::to_string(epoch) + " has no RAM layout");

	std::vector<RamBlockMem> dest;
	for (const auto &b : seg.layout) {
		void *p = mmap(nullptr, b.length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return die("mmap " + std::to_string(b.length) + " bytes: " + strerror(errno));
		dest.push_back({b.idstr, b.length, static_cast<unsigned char *>(p)});
	}
	auto loaded = store->load(epoch, dest, false);
	if (!loaded)
		return die("epoch " + std::to_string(epoch) + " does not load: " + loaded.message());

	int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return die(out + ": " + strerror(errno));
	printf("epoch %llu\n", static_cast<unsigned long long>(epoch));
	uint64_t off = 0;
	bool found = block.empty();
	for (const auto &b : dest) {
		if (!block.empty() && b.idstr != block)
			continue;
		found = true;
		if (!write_all(fd, b.base, b.length)) {
			::close(fd);
			return die(out + ": write failed: " + strerror(errno));
		}
		printf("block %s offset %llu length %llu\n", b.idstr.c_str(), static_cast<unsigned long long>(off),
		       static_cast<unsigned long long>(b.length));
		off += b.length;
	}
	if (::close(fd) < 0)
		return die(out + ": " + strerror(errno));
	if (!found)
		return die("epoch " + std::to_string(epoch) + " has no RAM block '" + block + "'");
	return 0;
}
