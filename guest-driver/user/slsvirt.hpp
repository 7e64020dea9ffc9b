// SPDX-License-Identifier: GPL-2.0-or-later
// libslsvirt for C++: a header-only wrapper around slsvirt.h.
//
// slsvirt::device owns the /dev/slsvirt fd (RAII, move-only). Nothing
// throws: every call that can fail returns slsvirt::result<T> (a value or a
// std::error_code in std::generic_category(), i.e. the errno of slsvirt.h)
// or a plain std::error_code. Works with -fno-exceptions.
//
//   auto dev = slsvirt::device::open();
//   if (!dev) { /* dev.error() */ }
//   auto epoch = dev.value().persist();             // synchronous barrier
//   auto ticket = dev.value().persist_async();      // returns at once
//   std::error_code ec = dev.value().wait(ticket.value(), 1000);
//   // or: poll() dev.value().fd() for POLLIN, then dev.value().next_completion()
#ifndef SLSVIRT_USER_HPP
#define SLSVIRT_USER_HPP

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <utility>

#include <sys/mman.h>
#include <unistd.h>

#include "slsvirt.h"

namespace slsvirt {

// A T or the error that prevented it. T must be default-constructible.
template <typename T>
class [[nodiscard]] result {
public:
	result(T value) : value_(std::move(value)) {}
	result(std::error_code error) : error_(error) {}

	explicit operator bool() const noexcept { return !error_; }
	// Only meaningful when the result holds a value.
	T &value() & noexcept { return value_; }
	const T &value() const & noexcept { return value_; }
	T &&value() && noexcept { return std::move(value_); }
	std::error_code error() const noexcept { return error_; }

private:
	T value_{};
	std::error_code error_;
};

inline std::error_code last_error() noexcept
{
	return std::error_code(errno, std::generic_category());
}

using epoch_info = struct slsvirt_epoch_info;
using device_info = struct slsvirt_info;	// "slsvirt_info" alone is the C function
using completion = struct slsvirt_completion;
using mem_info = struct slsvirt_mem_info;

class device {
public:
	device() noexcept = default;
	explicit device(int fd) noexcept : fd_(fd) {}
	device(const device &) = delete;
	device &operator=(const device &) = delete;
	device(device &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
	device &operator=(device &&other) noexcept
	{
		if (this != &other) {
			reset();
			fd_ = std::exchange(other.fd_, -1);
		}
		return *this;
	}
	~device() { reset(); }

	static result<device> open() noexcept
	{
		int fd = slsvirt_open();

		if (fd < 0)
			return last_error();
		return device(fd);
	}

	int fd() const noexcept { return fd_; }
	bool is_open() const noexcept { return fd_ >= 0; }
	void reset() noexcept
	{
		if (fd_ >= 0)
			::close(std::exchange(fd_, -1));
	}

	// Synchronous barrier: the durable epoch covering every earlier write.
	// std::errc::interrupted on a signal (call again).
	result<std::uint64_t> persist() const noexcept
	{
		std::uint64_t epoch;

		if (slsvirt_persist(fd_, &epoch) < 0)
			return last_error();
		return epoch;
	}

	// Asynchronous barrier: the ticket (the epoch that will cover the writes).
	result<std::uint64_t> persist_async() const noexcept
	{
		std::uint64_t ticket;

		if (slsvirt_persist_async(fd_, &ticket) < 0)
			return last_error();
		return ticket;
	}

	// Wait for @ticket of this fd (see slsvirt_wait()); @epoch may be null.
	std::error_code wait(std::uint64_t ticket, int timeout_ms = -1,
			     std::uint64_t *epoch = nullptr) const noexcept
	{
		if (slsvirt_wait(fd_, ticket, timeout_ms, epoch) < 0)
			return last_error();
		return {};
	}

	// The oldest completion; blocks unless the fd is O_NONBLOCK. Use after
	// poll() reported POLLIN. The completion's own status tells whether its
	// ticket became durable.
	result<completion> next_completion() const noexcept
	{
		completion rec{};

		if (slsvirt_read_completions(fd_, &rec, 1) < 0)
			return last_error();
		return rec;
	}

	result<epoch_info> epoch() const noexcept
	{
		epoch_info ei;

		if (slsvirt_get_epoch(fd_, &ei) < 0)
			return last_error();
		return ei;
	}

	result<device_info> info() const noexcept
	{
		device_info di;

		if (::slsvirt_info(fd_, &di) < 0)
			return last_error();
		return di;
	}

	result<mem_info> memory() const noexcept
	{
		mem_info mi;

		if (::slsvirt_mem_info(fd_, &mi) < 0)
			return last_error();
		return mi;
	}

	// Give [addr, addr + len) of an elastic region to the host / take it
	// back (reads as zero). @done: bytes from addr in the requested state.
	std::error_code release(void *addr, std::size_t len,
				std::uint64_t *done = nullptr) const noexcept
	{
		if (slsvirt_mem_release(fd_, addr, len, done) < 0)
			return last_error();
		return {};
	}

	std::error_code reclaim(void *addr, std::size_t len,
				std::uint64_t *done = nullptr) const noexcept
	{
		if (slsvirt_mem_reclaim(fd_, addr, len, done) < 0)
			return last_error();
		return {};
	}

private:
	int fd_ = -1;
};

// An elastic region of a device (RAII, move-only): unmapped on destruction,
// also while parts of it are released.
class elastic_region {
public:
	elastic_region() noexcept = default;
	elastic_region(const elastic_region &) = delete;
	elastic_region &operator=(const elastic_region &) = delete;
	elastic_region(elastic_region &&o) noexcept
		: addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}
	elastic_region &operator=(elastic_region &&o) noexcept
	{
		if (this != &o) {
			reset();
			addr_ = std::exchange(o.addr_, nullptr);
			len_ = std::exchange(o.len_, 0);
		}
		return *this;
	}
	~elastic_region() { reset(); }

	static result<elastic_region> map(const device &dev, std::size_t len) noexcept
	{
		void *p = slsvirt_mem_map(dev.fd(), len);

		if (!p)
			return last_error();
		return elastic_region(p, len);
	}

	void *data() const noexcept { return addr_; }
	std::size_t size() const noexcept { return len_; }
	void reset() noexcept
	{
		if (addr_)
			::munmap(std::exchange(addr_, nullptr), std::exchange(len_, 0));
	}

private:
	elastic_region(void *addr, std::size_t len) noexcept : addr_(addr), len_(len) {}
	void *addr_ = nullptr;
	std::size_t len_ = 0;
};

// The error a completion carries (empty for a durable ticket).
inline std::error_code completion_error(const completion &rec) noexcept
{
	if (rec.status == 0)
		return {};
	return std::error_code(-rec.status, std::generic_category());
}

} // namespace slsvirt

#endif // SLSVIRT_USER_HPP
