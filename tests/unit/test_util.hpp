// Helpers shared by the unit tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace slsvirt::test {

// A fresh directory under $TMPDIR, removed (recursively) on destruction.
class TempDir {
public:
	TempDir();
	~TempDir();
	const std::string &path() const { return path_; }

private:
	std::string path_;
};

// Deterministic pseudo-random bytes.
void fill_random(unsigned char *p, size_t n, uint64_t seed);
std::vector<unsigned char> read_file(const std::string &path);
void write_file(const std::string &path, const std::vector<unsigned char> &data);
void truncate_file(const std::string &path, uint64_t size);

} // namespace slsvirt::test
