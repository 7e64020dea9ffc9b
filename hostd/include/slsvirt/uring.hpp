// io_uring (liburing) file writer: batched writes with short-write resume,
// every completion checked, user_data naming what each submission was.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <cstdint>
#include <string>
#include <vector>

#include "slsvirt/result.hpp"

namespace slsvirt {

class Uring {
public:
	[[nodiscard]] static Result<Uring> create(unsigned entries);
	Uring(Uring &&o) noexcept;
	Uring &operator=(Uring &&) = delete;
	Uring(const Uring &) = delete;
	~Uring();
	io_uring *get() { return &ring_; }
	unsigned entries() const { return entries_; }

private:
	Uring() = default;
	io_uring ring_{};
	unsigned entries_ = 0;
	bool live_ = false;
};

// What a submission was, carried in its user_data (kind in the top byte,
// slot in the low 32 bits); the slot holds the record number and offsets.
enum class UringOpKind : uint8_t { write = 1, fdatasync = 2, fsync_other = 3 };

// Test/fault hooks of a UringFileWriter.
struct UringFaults {
	int write_error = 0;		// the next completed write fails with this -errno
	bool short_writes = false;	// every write is first submitted at about half its length
	unsigned short_align = 1;	// ... rounded down to this (O_DIRECT: 4096)
	int fdatasync_error = 0;	// the next fdatasync fails with this -errno
};

class UringFileWriter {
public:
	UringFileWriter(Uring &ring, int fd, std::string what);
	~UringFileWriter() { drain().ignore(); }
	UringFileWriter(const UringFileWriter &) = delete;
	UringFileWriter &operator=(const UringFileWriter &) = delete;

	// Queues a write of buf[0, len) at file offset off. buf must stay valid
	// until drain() returns. `record` names the record for error messages.
	[[nodiscard]] Status write(const void *buf, size_t len, uint64_t off, uint32_t record);
	// Queues one gathered write of iov[0, n) (n <= IOV_MAX) at file offset
	// off: IORING_OP_WRITEV, so page data goes straight from where it lies.
	// The iovec array is copied; the memory it points at must stay valid
	// until drain() returns. A short completion is resumed where it stopped.
	[[nodiscard]] Status writev(const struct iovec *iov, size_t n, uint64_t off, uint32_t record);
	// Hands queued submissions to the kernel now (no wait), so IO overlaps
	// with the caller's next CPU work.
	[[nodiscard]] Status submit();
	// Waits for every queued write; the first failure is returned.
	[[nodiscard]] Status drain();
	// Durability barrier for everything queued so far: queues an fdatasync
	// (IOSQE_IO_DRAIN, so it starts after every earlier submission), plus an
	// fsync of other_fd (e.g. the directory) if >= 0, submits them with the
	// queued writes in one io_uring_enter and waits for all. A write resumed
	// after the barrier was queued (short write) gets a second fdatasync.
	[[nodiscard]] Status fdatasync(int other_fd = -1);
	// Test/fault hook: the next completed write of this writer fails with err.
	void inject_error(int neg_errno) { faults_.write_error = neg_errno; }
	void inject(const UringFaults &f) { faults_ = f; }

	uint64_t bytes_written() const { return bytes_written_; }
	uint64_t short_writes() const { return short_writes_; }	// completions that were short
	uint64_t submits() const { return submits_; }		// io_uring_enter calls

private:
	struct Op {
		UringOpKind kind;
		int fd;
		std::vector<struct iovec> iov;	// what to write (writes)
		size_t len;			// total bytes of iov
		size_t done;			// bytes completed
		uint64_t off;
		uint32_t record;
		bool busy;
		std::vector<struct iovec> sub;	// the part of iov in flight
	};
	[[nodiscard]] Status queue_write(Op op);
	[[nodiscard]] Status submit_op(uint32_t slot, bool drain = false);
	[[nodiscard]] Status submit_now();
	[[nodiscard]] Status reap(unsigned min_complete);
	[[nodiscard]] Status handle_cqe(const io_uring_cqe *cqe);
	uint32_t alloc_slot();

	Uring &ring_;
	int fd_;
	std::string what_;
	std::vector<Op> ops_;
	std::vector<uint32_t> free_;
	unsigned in_flight_ = 0;
	unsigned unsubmitted_ = 0;
	uint64_t bytes_written_ = 0;
	UringFaults faults_;
	uint64_t short_writes_ = 0, submits_ = 0;
	unsigned barriers_in_flight_ = 0;
	bool resumed_behind_barrier_ = false;
	Status first_error_;
};

} // namespace slsvirt
