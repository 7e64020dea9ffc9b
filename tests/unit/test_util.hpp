// Helpers shared by the unit tests.
#pragma once

#include <cstdint>
#include <gtest/gtest.h>
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

// Test names for fault-point parameters {"fail-write", errno}: gtest allows
// no '-' in a name, so "fail-write" becomes "fail_write".
struct FaultParamName {
	template <typename P>
	std::string operator()(const ::testing::TestParamInfo<P> &info) const
	{
		std::string n = info.param.first;
		for (auto &c : n)
			if (c == '-')
				c = '_';
		return n;
	}
};

} // namespace slsvirt::test
