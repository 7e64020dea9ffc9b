#include <limits.h>

#include <algorithm>
#include <cstring>

#include "slsvirt/uring.hpp"

namespace slsvirt {
namespace {
constexpr uint64_t make_user_data(UringOpKind k, uint32_t slot)
{
	return (static_cast<uint64_t>(k) << 56) | slot;
}
} // namespace

Result<Uring> Uring::create(unsigned entries)
{
	Uring u;
	int r = io_uring_queue_init(entries, &u.ring_, 0);
	if (r < 0)
		return errno_error(r, strf("io_uring_queue_init(%u)", entries));
	u.entries_ = entries;
	u.live_ = true;
	return u;
}

Uring::Uring(Uring &&o) noexcept : ring_(o.ring_), entries_(o.entries_), live_(o.live_)
{
	o.live_ = false;
}

Uring::~Uring()
{
	if (live_)
		io_uring_queue_exit(&ring_);
}

UringFileWriter::UringFileWriter(Uring &ring, int fd, std::string what)
    : ring_(ring), fd_(fd), what_(std::move(what))
{
}

uint32_t UringFileWriter::alloc_slot()
{
	if (!free_.empty()) {
		uint32_t s = free_.back();
		free_.pop_back();
		return s;
	}
	ops_.push_back({});
	return static_cast<uint32_t>(ops_.size() - 1);
}

Status UringFileWriter::submit_now()
{
	int r = io_uring_submit(ring_.get());
	if (r < 0)
		return errno_error(r, what_ + ": io_uring_submit");
	submits_++;
	unsubmitted_ = 0;
	return {};
}

Status UringFileWriter::submit_op(uint32_t slot, bool drain)
{
	// Bound what is in flight by the ring size so the CQ cannot overflow.
	while (in_flight_ >= ring_.entries()) {
		unsigned before = in_flight_;
		SLS_TRY(reap(1));
		if (in_flight_ >= before)
			return make_error(-EIO, "%s: io_uring made no progress", what_.c_str());
	}
	io_uring_sqe *sqe = io_uring_get_sqe(ring_.get());
	if (!sqe) {
		// Submission queue full: hand it to the kernel, which empties it.
		SLS_TRY(submit_now());
		sqe = io_uring_get_sqe(ring_.get());
		if (!sqe)
			return make_error(-EBUSY, "%s: no io_uring submission entry free", what_.c_str());
	}
	Op &op = ops_[slot];
	if (op.kind == UringOpKind::write) {
		size_t chunk = std::min<size_t>(op.len - op.done, 1u << 30);
		// Fault: a first submission of about half the length; the kernel
		// really writes fewer bytes and the completion is short.
		if (faults_.short_writes && op.done == 0) {
			size_t a = faults_.short_align ? faults_.short_align : 1;
			size_t half = chunk / 2 / a * a;
			if (half > 0 && half < chunk)
				chunk = a == 1 ? half + (chunk > 2 ? 1 : 0) : half;
		}
		// The iovecs covering [done, done + chunk).
		op.sub.clear();
		size_t skip = op.done, want = chunk;
		for (const auto &v : op.iov) {
			if (!want)
				break;
			if (skip >= v.iov_len) {
				skip -= v.iov_len;
				continue;
			}
			size_t n = std::min(v.iov_len - skip, want);
			op.sub.push_back({static_cast<unsigned char *>(v.iov_base) + skip, n});
			want -= n;
			skip = 0;
		}
		if (op.sub.size() == 1)
			io_uring_prep_write(sqe, op.fd, op.sub[0].iov_base, static_cast<unsigned>(chunk), op.off + op.done);
		else
			io_uring_prep_writev(sqe, op.fd, op.sub.data(), static_cast<unsigned>(op.sub.size()),
					     op.off + op.done);
		if (barriers_in_flight_)
			resumed_behind_barrier_ = true;
	} else if (op.kind == UringOpKind::fdatasync) {
		io_uring_prep_fsync(sqe, op.fd, IORING_FSYNC_DATASYNC);
		barriers_in_flight_++;
	} else {
		io_uring_prep_fsync(sqe, op.fd, 0);
	}
	if (drain)
		sqe->flags |= IOSQE_IO_DRAIN;
	io_uring_sqe_set_data64(sqe, make_user_data(op.kind, slot));
	in_flight_++;
	unsubmitted_++;
	if (unsubmitted_ >= ring_.entries() / 2)
		SLS_TRY(submit_now());
	return {};
}

Status UringFileWriter::handle_cqe(const io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	auto kind = static_cast<UringOpKind>(ud >> 56);
	uint32_t slot = static_cast<uint32_t>(ud & 0xffffffffu);
	if (slot >= ops_.size() || !ops_[slot].busy || ops_[slot].kind != kind)
		return make_error(-EIO, "%s: completion with unknown user_data 0x%llx", what_.c_str(),
				  static_cast<unsigned long long>(ud));
	Op &op = ops_[slot];
	in_flight_--;
	int res = cqe->res;
	if (kind == UringOpKind::fdatasync)
		barriers_in_flight_--;
	if (kind == UringOpKind::write && faults_.write_error && res >= 0) {
		res = faults_.write_error;
		faults_.write_error = 0;
	}
	if (kind == UringOpKind::fdatasync && faults_.fdatasync_error && res >= 0) {
		res = faults_.fdatasync_error;
		faults_.fdatasync_error = 0;
	}
	if (res < 0) {
		op.busy = false;
		free_.push_back(slot);
		if (kind == UringOpKind::fdatasync)
			return errno_error(res, what_ + ": fdatasync");
		if (kind == UringOpKind::fsync_other)
			return errno_error(res, what_ + ": fsync of the directory");
		return errno_error(res, strf("%s: write of record %u (%zu bytes at offset %llu)", what_.c_str(),
					     op.record, op.len - op.done,
					     static_cast<unsigned long long>(op.off + op.done)));
	}
	if (kind == UringOpKind::write) {
		if (res == 0) {
			op.busy = false;
			free_.push_back(slot);
			return make_error(-EIO, "%s: write of record %u made no progress at offset %llu",
					  what_.c_str(), op.record,
					  static_cast<unsigned long long>(op.off + op.done));
		}
		op.done += static_cast<size_t>(res);
		bytes_written_ += static_cast<uint64_t>(res);
		if (op.done < op.len) {
			short_writes_++;
			return submit_op(slot);	// short write: resume the rest
		}
	}
	op.busy = false;
	free_.push_back(slot);
	return {};
}

Status UringFileWriter::reap(unsigned min_complete)
{
	if (unsubmitted_ || min_complete) {
		int r = io_uring_submit_and_wait(ring_.get(), min_complete);
		if (r < 0 && r != -EINTR)
			return errno_error(r, what_ + ": io_uring_submit_and_wait");
		submits_++;
		unsubmitted_ = 0;
	}
	io_uring_cqe *cqe;
	unsigned head, seen = 0;
	Status st;
	// Collect all available completions first, then handle them (handling
	// may resubmit, which must not race with the iteration).
	std::vector<io_uring_cqe> done;
	io_uring_for_each_cqe(ring_.get(), head, cqe)
	{
		done.push_back(*cqe);
		seen++;
	}
	io_uring_cq_advance(ring_.get(), seen);
	for (const auto &c : done) {
		Status s = handle_cqe(&c);
		if (!s.ok() && st.ok())
			st = s;
	}
	return st;
}

Status UringFileWriter::queue_write(Op op)
{
	if (!first_error_.ok())
		return first_error_;
	if (op.len == 0)
		return {};
	uint32_t slot = alloc_slot();
	ops_[slot] = std::move(op);
	Status s = submit_op(slot);
	if (!s.ok())
		first_error_ = s;
	return s;
}

Status UringFileWriter::write(const void *buf, size_t len, uint64_t off, uint32_t record)
{
	return queue_write(Op{UringOpKind::write, fd_, {{const_cast<void *>(buf), len}}, len, 0, off, record, true, {}});
}

Status UringFileWriter::writev(const struct iovec *iov, size_t n, uint64_t off, uint32_t record)
{
	if (n > IOV_MAX)
		return make_error(-EINVAL, "%s: %zu iovecs in one write (at most %d)", what_.c_str(), n, IOV_MAX);
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += iov[i].iov_len;
	return queue_write(Op{UringOpKind::write, fd_, std::vector<struct iovec>(iov, iov + n), len, 0, off, record,
			      true, {}});
}

Status UringFileWriter::submit()
{
	if (!first_error_.ok())
		return first_error_;
	if (!unsubmitted_)
		return {};
	Status s = submit_now();
	if (!s.ok())
		first_error_ = s;
	return s;
}

Status UringFileWriter::drain()
{
	while (in_flight_ > 0) {
		unsigned before = in_flight_;
		Status s = reap(1);
		if (!s.ok() && first_error_.ok())
			first_error_ = s;
		if (!s.ok() && in_flight_ >= before)
			break;	// the ring itself failed: nothing more will complete
	}
	return first_error_;
}

Status UringFileWriter::fdatasync(int other_fd)
{
	if (!first_error_.ok())
		return first_error_;
	resumed_behind_barrier_ = false;
	if (other_fd >= 0) {
		uint32_t o = alloc_slot();
		ops_[o] = Op{UringOpKind::fsync_other, other_fd, {}, 0, 0, 0, 0, true, {}};
		if (Status s = submit_op(o); !s.ok()) {
			first_error_ = s;
			return drain();
		}
	}
	uint32_t slot = alloc_slot();
	ops_[slot] = Op{UringOpKind::fdatasync, fd_, {}, 0, 0, 0, 0, true, {}};
	if (Status s = submit_op(slot, true); !s.ok()) {
		first_error_ = s;
		return drain();
	}
	SLS_TRY(drain());
	if (resumed_behind_barrier_) {
		// A short write's remainder went in after the barrier: sync again.
		resumed_behind_barrier_ = false;
		slot = alloc_slot();
		ops_[slot] = Op{UringOpKind::fdatasync, fd_, {}, 0, 0, 0, 0, true, {}};
		if (Status s = submit_op(slot, true); !s.ok())
			first_error_ = s;
		return drain();
	}
	return {};
}

} // namespace slsvirt
