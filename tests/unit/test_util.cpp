#include "test_util.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace slsvirt::test {

TempDir::TempDir()
{
	const char *t = getenv("TMPDIR");
	std::string tmpl = std::string(t && *t ? t : "/tmp") + "/slsvirt-unit-XXXXXX";
	if (!mkdtemp(tmpl.data()))
		throw std::runtime_error("mkdtemp failed");
	path_ = tmpl;
}

TempDir::~TempDir()
{
	std::error_code ec;
	std::filesystem::remove_all(path_, ec);
}

void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = static_cast<unsigned char>(x);
	}
}

std::vector<unsigned char> read_file(const std::string &path)
{
	std::ifstream f(path, std::ios::binary);
	return std::vector<unsigned char>(std::istreambuf_iterator<char>(f), {});
}

void write_file(const std::string &path, const std::vector<unsigned char> &data)
{
	std::ofstream f(path, std::ios::binary | std::ios::trunc);
	f.write(reinterpret_cast<const char *>(data.data()), static_cast<std::streamsize>(data.size()));
}

void truncate_file(const std::string &path, uint64_t size)
{
	if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0)
		throw std::runtime_error("truncate failed");
}

} // namespace slsvirt::test
