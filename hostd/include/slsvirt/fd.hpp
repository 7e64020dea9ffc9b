// RAII owners for file descriptors and memory mappings.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "slsvirt/result.hpp"

namespace slsvirt {

class UniqueFd {
public:
	UniqueFd() = default;
	explicit UniqueFd(int fd) : fd_(fd) {}
	UniqueFd(const UniqueFd &) = delete;
	UniqueFd &operator=(const UniqueFd &) = delete;
	UniqueFd(UniqueFd &&o) noexcept : fd_(o.release()) {}
	UniqueFd &operator=(UniqueFd &&o) noexcept
	{
		if (this != &o)
			reset(o.release());
		return *this;
	}
	~UniqueFd() { reset(); }

	int get() const { return fd_; }
	bool valid() const { return fd_ >= 0; }
	int release() { return std::exchange(fd_, -1); }
	void reset(int fd = -1);

private:
	int fd_ = -1;
};

// A MAP_SHARED mapping, unmapped on destruction.
class Mapping {
public:
	Mapping() = default;
	Mapping(const Mapping &) = delete;
	Mapping &operator=(const Mapping &) = delete;
	Mapping(Mapping &&o) noexcept
	    : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}
	Mapping &operator=(Mapping &&o) noexcept;
	~Mapping() { reset(); }

	// Maps [0, len) of fd read/write, shared.
	[[nodiscard]] static Result<Mapping> map_shared(int fd, size_t len);

	unsigned char *data() const { return static_cast<unsigned char *>(addr_); }
	size_t size() const { return len_; }
	void reset();

private:
	void *addr_ = nullptr;
	size_t len_ = 0;
};

// Reads/writes exactly len bytes (resuming short transfers, retrying EINTR).
[[nodiscard]] Status read_full(int fd, void *buf, size_t len, const char *what);
[[nodiscard]] Status write_full(int fd, const void *buf, size_t len, const char *what);
[[nodiscard]] Status pread_full(int fd, void *buf, size_t len, off_t off, const std::string &what);
// Whole small file into a string (refuses files above max_len).
[[nodiscard]] Result<std::string> read_small_file(const std::string &path, size_t max_len);
// Writes path atomically: tmp file, fsync, rename, fsync of the directory.
[[nodiscard]] Status write_file_atomic(const std::string &path, const std::string &data, unsigned mode);
// mkdir -p with the given mode for directories it creates.
[[nodiscard]] Status make_dirs(const std::string &path, unsigned mode);
[[nodiscard]] Status fsync_dir(const std::string &dir);

} // namespace slsvirt
