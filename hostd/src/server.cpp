// slsvirtd connection handling: one thread and one io_uring per engine.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <optional>

#include "slsvirt/branch.hpp"
#include "slsvirt/compactor.hpp"
#include "slsvirt/crc32c.hpp"
#include "slsvirt/log.hpp"
#include "slsvirt/open_segments.hpp"
#include "slsvirt/proto_codec.hpp"
#include "slsvirt/server.hpp"
#include "slsvirt/store.hpp"
#include "slsvirt/uring.hpp"

namespace slsvirt {

struct Server::Conn {
	UniqueFd fd;
	std::thread thread;
	std::atomic<bool> done{false};
	pid_t pid = 0;
	uid_t uid = 0;
};

namespace {

// A failure that ends the connection without a reply.
struct Violation {
	Status status;
};

Status send_all(int fd, const proto::Bytes &b)
{
	size_t done = 0;
	while (done < b.size()) {
		ssize_t n = ::send(fd, b.data() + done, b.size() - done, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno_error("send reply");
		}
		done += static_cast<size_t>(n);
	}
	return {};
}

// Receives exactly len bytes; SCM_RIGHTS fds that arrive are collected.
// *eof_at_start is set when the peer closed before the first byte.
Status recv_exact(int fd, unsigned char *buf, size_t len, std::vector<UniqueFd> &fds, bool *eof_at_start)
{
	size_t done = 0;
	while (done < len) {
		struct iovec iov = {buf + done, len - done};
		alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 8)];
		struct msghdr mh = {};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		ssize_t n = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno_error("recvmsg");
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t i = 0; i < nfd; i++) {
					int f;
					memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
					fds.emplace_back(f);
				}
			}
		}
		if (mh.msg_flags & MSG_CTRUNC)
			return make_error(-EPROTO, "too many file descriptors attached (control data truncated)");
		if (n == 0) {
			if (done == 0 && eof_at_start) {
				*eof_at_start = true;
				return make_error(-ECONNRESET, "peer closed the connection");
			}
			return make_error(-EPROTO, "peer closed mid-message (%zu of %zu bytes)", done, len);
		}
		done += static_cast<size_t>(n);
	}
	return {};
}

uint64_t mono_ns()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

class Session {
public:
	Session(int fd, const ServerConfig &cfg, std::mutex &mu, std::set<std::string> &active, pid_t pid)
	    : fd_(fd), cfg_(cfg), mu_(mu), active_(active), pid_(pid)
	{
	}
	~Session()
	{
		// A QEMU that reconnects keeps reading the files it was given.
		if (pid_ <= 0 || (kill(pid_, 0) < 0 && errno == ESRCH))
			open_segments::release(holder_id());
		compactor_.reset();	// joins its thread before the store goes
		if (registered_) {
			std::lock_guard lk(mu_);
			active_.erase(vm_);
		}
	}

	void run()
	{
		for (;;) {
			proto::Header h;
			proto::Bytes payload;
			std::vector<UniqueFd> fds;
			bool eof = false;
			Status s = receive(h, payload, fds, &eof);
			if (eof) {
				// Before HELLO this is a liveness probe (slsctl), not worth a line.
				if (handshaken_)
					SLS_LOG_INFO("%s: connection closed by peer", who().c_str());
				else
					SLS_LOG_DEBUG("%s: closed before HELLO", who().c_str());
				return;
			}
			if (!s.ok())
				return violation(s);
			if (!handshaken_) {
				if (h.type != SLS_MSG_HELLO)
					return violation(make_error(-EPROTO, "first message is %s, expected HELLO",
								    proto::type_name(h.type)));
				if (!handle_hello(payload, fds))
					return;
				continue;
			}
			if (!fds.empty())
				return violation(make_error(-EPROTO, "%s carries file descriptors",
							    proto::type_name(h.type)));
			bool keep = false;
			if (h.type == SLS_MSG_EPOCH)
				keep = handle_epoch(payload);
			else if (h.type == SLS_MSG_RESTORE)
				keep = handle_restore(payload);
			else
				return violation(make_error(-EPROTO, "unexpected %s from the engine",
							    proto::type_name(h.type)));
			if (!keep)
				return;
		}
	}

private:
	std::string who() const
	{
		return strf("conn pid %d vm '%s'", static_cast<int>(pid_), vm_.empty() ? "?" : vm_.c_str());
	}

	void violation(const Status &s)
	{
		SLS_LOG_WARN("%s: protocol violation: %s; closing the connection", who().c_str(), s.message().c_str());
	}

	Status receive(proto::Header &h, proto::Bytes &payload, std::vector<UniqueFd> &fds, bool *eof)
	{
		unsigned char hb[proto::kHeaderSize];
		SLS_TRY(recv_exact(fd_, hb, sizeof(hb), fds, eof));
		auto hr = proto::decode_header(hb, version_);
		if (!hr)
			return hr.status();
		h = *hr;
		if (h.seq != recv_seq_ + 1)
			return make_error(-EPROTO, "%s: sequence number %llu, expected %llu", proto::type_name(h.type),
					  static_cast<unsigned long long>(h.seq),
					  static_cast<unsigned long long>(recv_seq_ + 1));
		recv_seq_ = h.seq;
		payload.resize(h.length);
		if (h.length)
			SLS_TRY(recv_exact(fd_, payload.data(), h.length, fds, nullptr));
		return proto::check_payload(h, payload);
	}

	Status send(const proto::Bytes &b) { return send_all(fd_, b); }

	bool hello_fail(int code, const std::string &msg)
	{
		SLS_LOG_WARN("%s: HELLO rejected: %s", who().c_str(), msg.c_str());
		Status s = send(proto::encode_hello_ack({code, SLS_PROTO_VERSION, 0, msg}, ++send_seq_));
		(void)s.ok();	// the connection closes either way
		return false;
	}

	bool handle_hello(const proto::Bytes &payload, std::vector<UniqueFd> &fds)
	{
		auto hr = proto::decode_hello(payload);
		if (!hr)
			return hello_fail(hr.code(), hr.message());
		const proto::Hello &hello = *hr;
		vm_ = hello.vm_name;
		auto ver = proto::negotiate_version(hello);
		if (!ver)
			return hello_fail(ver.code(), ver.message());
		if (fds.size() != 1)
			return hello_fail(-EINVAL, strf("HELLO must carry exactly 1 fd, got %zu", fds.size()));
		struct stat st;
		if (fstat(fds[0].get(), &st) < 0)
			return hello_fail(-errno, "fstat of the staging fd failed");
		if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < hello.staging_size)
			return hello_fail(-EINVAL, strf("staging fd is %lld bytes (or not a file), HELLO says %llu",
							static_cast<long long>(st.st_size),
							static_cast<unsigned long long>(hello.staging_size)));
		// A staging file that shrinks under us would SIGBUS the whole daemon.
		int seals = fcntl(fds[0].get(), F_GET_SEALS);
		if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
			if (fcntl(fds[0].get(), F_ADD_SEALS, F_SEAL_SHRINK) < 0)
				SLS_LOG_WARN("%s: staging fd cannot be sealed against shrinking (%s); create it "
					     "with MFD_ALLOW_SEALING",
					     who().c_str(), strerror(errno));
		}
		{
			std::lock_guard lk(mu_);
			if (active_.count(vm_))
				return hello_fail(-EBUSY, "VM '" + vm_ + "' is already connected");
			active_.insert(vm_);
			registered_ = true;
		}
		auto store = Store::open(cfg_.store_root, vm_, true);
		if (!store)
			return hello_fail(store.code(), store.message());
		store_.emplace(std::move(*store));
		store_->set_direct_io(cfg_.direct_io);
		store_->set_spare_limits(cfg_.spare_files, cfg_.spare_bytes);
		store_->set_name_on_write(false);	// named after the ack (handle_epoch)
		if (auto rec = store_->recover(); !rec)
			return hello_fail(rec.code(), rec.message());
		else if (*rec)
			SLS_LOG_INFO("%s: %u segment file(s) renamed to the epoch their header names", who().c_str(), *rec);
		hello_blocks_ = hello.blocks;
		auto ring = Uring::create(256);
		if (!ring)
			return hello_fail(ring.code(), ring.message());
		ring_.emplace(std::move(*ring));
		auto map = Mapping::map_shared(fds[0].get(), hello.staging_size);
		if (!map)
			return hello_fail(map.code(), map.message());
		staging_ = std::move(*map);
		staging_fd_ = std::move(fds[0]);
		for (const auto &b : hello.blocks)
			blocks_.push_back({b.idstr, b.length, staging_.data() + b.staging_offset});
		auto list = store_->list(ScanDepth::structure);
		if (!list)
			return hello_fail(list.code(), list.message());
		uint64_t durable = 0;
		for (const auto &v : resolve_chains(*list)) {
			if (v.seg.status == SegmentStatus::valid)
				newest_ = v.seg.epoch;
			if (v.restorable)
				durable = v.seg.epoch;
		}
		compactor_ = std::make_unique<Compactor>(
			*store_, RetentionPolicy{cfg_.retain, cfg_.compact_min, cfg_.compact_bytes_pct, cfg_.compact_merge}, cfg_.faults,
			cfg_.compact_interval_ms, who());
		version_ = static_cast<uint16_t>(*ver);
		handshaken_ = true;
		SLS_LOG_INFO("%s: HELLO ok: %zu RAM blocks, staging %llu bytes, newest epoch %llu, newest restorable %llu",
			     who().c_str(), blocks_.size(), static_cast<unsigned long long>(hello.staging_size),
			     static_cast<unsigned long long>(newest_), static_cast<unsigned long long>(durable));
		Status s = send(proto::encode_hello_ack({0, *ver, durable, "ok"}, ++send_seq_));
		if (!s.ok()) {
			SLS_LOG_WARN("%s: %s", who().c_str(), s.message().c_str());
			return false;
		}
		return true;
	}

	bool ack_epoch(uint64_t epoch, int status, uint64_t bytes, const std::string &msg)
	{
		if (uint64_t ms = cfg_.faults.delay_ack_ms()) {
			struct timespec ts = {static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1000000};
			nanosleep(&ts, nullptr);
		}
		Status s = send(proto::encode_epoch_ack({epoch, status, bytes, msg}, ++send_seq_));
		if (!s.ok())
			SLS_LOG_WARN("%s: %s", who().c_str(), s.message().c_str());
		return s.ok();
	}

	bool handle_epoch(const proto::Bytes &payload)
	{
		auto er = proto::decode_epoch(payload);
		if (!er) {
			violation(er.status());
			return false;
		}
		const proto::Epoch &e = *er;
		const auto ep = static_cast<unsigned long long>(e.epoch);
		const bool full = e.flags & SLS_EPOCH_F_FULL;
		auto refuse = [&](int code, const std::string &m) {
			SLS_LOG_WARN("%s: epoch %llu refused: %s", who().c_str(), ep, m.c_str());
			last_acked_ = 0;	// the engine sends a FULL epoch next
			return ack_epoch(e.epoch, code, 0, m);
		};
		if (e.epoch <= newest_ || e.epoch <= last_epoch_)
			return refuse(-EINVAL, strf("epoch %llu is not newer than epoch %llu", ep,
						    static_cast<unsigned long long>(std::max(newest_, last_epoch_))));
		last_epoch_ = e.epoch;
		std::vector<PageRef> pages;
		if (!full) {
			if (last_acked_ == 0 || e.parent_epoch != last_acked_)
				return refuse(-EINVAL,
					      strf("delta epoch %llu names parent %llu, but the last durable epoch on this "
						   "connection is %llu: send a FULL epoch",
						   ep, static_cast<unsigned long long>(e.parent_epoch),
						   static_cast<unsigned long long>(last_acked_)));
			auto rp = proto::resolve_epoch_pages(e.pages, hello_blocks_);
			if (!rp)
				return refuse(rp.code(), rp.message());
			pages.reserve(rp->size());
			for (const auto &sp : *rp)
				pages.push_back({sp.block, sp.offset});
		}
		EpochMeta meta{e.epoch, e.parent_epoch, e.flags, e.capture_realtime_ns, e.stop_ns};
		auto wr = full ? store_->write_epoch(meta, blocks_, e.devstate, cfg_.faults, &*ring_)
			       : store_->write_delta_epoch(meta, blocks_, pages, e.devstate, cfg_.faults, &*ring_);
		if (!wr) {
			SLS_LOG_ERROR("%s: epoch %llu failed: %s", who().c_str(), ep, wr.message().c_str());
			last_acked_ = 0;
			return ack_epoch(e.epoch, wr.code(), 0, wr.message());
		}
		newest_ = e.epoch;
		last_acked_ = e.epoch;
		// The ack first: a guest may be waiting in PERSIST for it; the log
		// line (a write(2)) and the bookkeeping below are not on its path.
		bool ok = ack_epoch(e.epoch, 0, wr->file_bytes, "durable");
		SLS_LOG_INFO("vm %s epoch %llu (%s) durable: bytes=%llu pages=%llu zero_pages=%llu devstate=%llu "
			     "write_ms=%.2f stop_ms=%.2f%s",
			     vm_.c_str(), ep, full ? "full" : "delta", static_cast<unsigned long long>(wr->file_bytes),
			     static_cast<unsigned long long>(wr->nr_pages),
			     static_cast<unsigned long long>(wr->zero_pages),
			     static_cast<unsigned long long>(wr->devstate_bytes), wr->write_ns / 1e6, e.stop_ns / 1e6,
			     wr->reused_spare ? " (over a spare)" : "");
		if (full)
			release_branch_pin();
		store_->name_segment(*wr);	// a reused spare gets its epoch's name (a hint; no fsync)
		compactor_->kick();	// after the ack: retention never delays one
		return ok;
	}

	void zero_staging()
	{
		if (fallocate(staging_fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			      static_cast<off_t>(staging_.size())) == 0)
			return;
		memset(staging_.data(), 0, staging_.size());
	}

	// A clone's first full epoch of its own is durable: it no longer needs
	// the epoch it was cloned from (branch.hpp), so the parent may drop it.
	void release_branch_pin()
	{
		if (branch_pin_released_)
			return;
		branch_pin_released_ = true;
		auto br = load_branch(store_->vm_dir());
		if (!br || !*br)
			return;
		const std::string parent_dir = cfg_.store_root + "/" + (*br)->parent_vm;
		if (Status s = remove_pin(parent_dir, vm_); !s.ok())
			SLS_LOG_WARN("%s: %s", who().c_str(), s.message().c_str());
		else
			SLS_LOG_INFO("vm %s has an epoch of its own: released its pin on %s@%llu", vm_.c_str(),
				     (*br)->parent_vm.c_str(), static_cast<unsigned long long>((*br)->parent_epoch));
	}

	// Files a lazily restored VM reads are held for as long as its QEMU
	// lives (open_segments.hpp): by its pid, across reconnects.
	uint64_t holder_id() const
	{
		return pid_ > 0 ? static_cast<uint64_t>(pid_) : reinterpret_cast<uintptr_t>(this);
	}

	// RESTORE_ACK with fds attached (SCM_RIGHTS, all with the first byte).
	Status send_with_fds(const proto::Bytes &b, const std::vector<UniqueFd> &files)
	{
		if (files.empty())
			return send(b);
		std::vector<char> cbuf(CMSG_SPACE(sizeof(int) * files.size()));
		struct iovec iov = {const_cast<unsigned char *>(b.data()), b.size()};
		struct msghdr mh = {};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.data();
		mh.msg_controllen = cbuf.size();
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * files.size());
		for (size_t i = 0; i < files.size(); i++) {
			int f = files[i].get();
			memcpy(CMSG_DATA(c) + i * sizeof(int), &f, sizeof(int));
		}
		ssize_t n;
		do
			n = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return errno_error("send RESTORE_ACK");
		if (static_cast<size_t>(n) == b.size())
			return {};
		return send_all(fd_, proto::Bytes(b.begin() + n, b.end()));
	}

	// The page map of a lazy restore, into staging (proto.h, sls_lazy_map).
	Status write_lazy_map(const LazyMap &m)
	{
		sls_lazy_map h{};
		const size_t body = m.chain.size() * sizeof(uint64_t) + m.pages.size() * sizeof(sls_lazy_page);
		if (sizeof(h) + body > staging_.size())
			return make_error(-E2BIG, "page map of %zu pages does not fit the staging area", m.pages.size());
		unsigned char *at = staging_.data() + sizeof(h);
		for (uint64_t e : m.chain) {
			memcpy(at, &e, sizeof(e));
			at += sizeof(e);
		}
		for (const auto &p : m.pages) {
			sls_lazy_page e{};
			e.staging_page = (hello_blocks_[p.block].staging_offset + p.offset) / SLS_PAGE_SIZE;
			e.file_offset = p.file_offset;
			e.page_crc = p.crc;
			e.file = static_cast<uint16_t>(p.file);
			memcpy(at, &e, sizeof(e));
			at += sizeof(e);
		}
		h.magic = SLS_LAZY_MAP_MAGIC;
		h.nr_files = static_cast<uint32_t>(m.files.size());
		h.epoch = m.info.epoch;
		h.nr_pages = m.pages.size();
		h.entries_crc = crc32c(staging_.data() + sizeof(h), body);
		h.header_crc = crc32c(&h, offsetof(sls_lazy_map, header_crc));
		memcpy(staging_.data(), &h, sizeof(h));
		return {};
	}

	bool handle_restore(const proto::Bytes &payload)
	{
		auto rr = proto::decode_restore(payload);
		if (!rr) {
			violation(rr.status());
			return false;
		}
		const uint64_t t0 = mono_ns();
		const bool lazy = rr->flags & SLS_RESTORE_F_LAZY;
		// A clone reads its source's store and never writes it; its own
		// store gets its epochs from now on.
		std::optional<Store> source;
		const Store *from = &*store_;
		std::mutex *lock = &compactor_->store_lock();
		if ((rr->flags & SLS_RESTORE_F_SOURCE) && rr->source_vm != vm_) {
			auto st = Store::open(cfg_.store_root, rr->source_vm, false);
			if (!st) {
				Status s = send(proto::encode_restore_ack({rr->epoch, st.code(), st.message(), {}}, ++send_seq_));
				return s.ok();
			}
			source.emplace(std::move(*st));
			from = &*source;
			lock = nullptr;	// its own slsvirtd session (if any) holds its lock; held files are safe
		}
		if (!lazy)
			zero_staging();	// a lazy restore writes only the map at the start
		proto::Bytes reply;
		std::vector<UniqueFd> files;
		uint64_t restored = 0;	// the epoch, once restored
		std::string what = lazy ? "lazy restore" : "restore";
		if (lazy) {
			std::vector<RamBlockDesc> layout;
			for (const auto &b : hello_blocks_)
				layout.push_back({b.idstr, b.length});
			open_segments::release(holder_id());	// an earlier attempt's
			auto m = from->map_epoch(rr->epoch, layout, holder_id(), lock);
			Status ws = m ? write_lazy_map(*m) : Status(m.error());
			if (!ws.ok()) {
				SLS_LOG_ERROR("%s: %s of %s epoch %llu failed: %s", who().c_str(), what.c_str(),
					      from->vm().c_str(), static_cast<unsigned long long>(rr->epoch),
					      ws.message().c_str());
				open_segments::release(holder_id());
				reply = proto::encode_restore_ack({rr->epoch, ws.code(), ws.message(), {}}, ++send_seq_);
			} else {
				SLS_LOG_INFO("vm %s lazy restore of %s epoch %llu: %zu data pages in %zu segments, devstate=%zu "
					     "map_ms=%.1f",
					     vm_.c_str(), from->vm().c_str(), static_cast<unsigned long long>(m->info.epoch),
					     m->pages.size(), m->files.size(), m->devstate.size(), (mono_ns() - t0) / 1e6);
				reply = proto::encode_restore_ack({m->info.epoch, 0, "ok", m->devstate}, ++send_seq_);
				files = std::move(m->files);
				restored = m->info.epoch;
			}
		} else {
			auto lr = from->load(rr->epoch, blocks_, false, lock);
			if (!lr) {
				SLS_LOG_ERROR("%s: restore of %s epoch %llu failed: %s", who().c_str(), from->vm().c_str(),
					      static_cast<unsigned long long>(rr->epoch), lr.message().c_str());
				reply = proto::encode_restore_ack({rr->epoch, lr.code(), lr.message(), {}}, ++send_seq_);
			} else {
				SLS_LOG_INFO("vm %s restored %s epoch %llu: pages=%llu devstate=%zu load_ms=%.1f", vm_.c_str(),
					     from->vm().c_str(), static_cast<unsigned long long>(lr->info.epoch),
					     static_cast<unsigned long long>(lr->pages_loaded), lr->devstate.size(),
					     (mono_ns() - t0) / 1e6);
				reply = proto::encode_restore_ack({lr->info.epoch, 0, "ok", lr->devstate}, ++send_seq_);
				restored = lr->info.epoch;
			}
		}
		if (restored && !source) {
			Status rw = note_rewind(restored);
			if (!rw.ok()) {
				SLS_LOG_ERROR("%s: %s", who().c_str(), rw.message().c_str());
				open_segments::release(holder_id());
				files.clear();
				reply = proto::encode_restore_ack({rr->epoch, rw.code(), rw.message(), {}}, ++send_seq_);
			}
		}
		Status s = send_with_fds(reply, files);
		if (!s.ok())
			SLS_LOG_WARN("%s: %s", who().c_str(), s.message().c_str());
		return s.ok();
	}

	// A VM restored to an epoch older than its store's newest starts a new
	// timeline: recorded (durably, before the VM runs) so that a restore
	// without --epoch after a crash comes back to this one, not to the
	// newer epochs it left behind (branch.hpp Rewind).
	Status note_rewind(uint64_t epoch)
	{
		auto rw = load_rewinds(store_->vm_dir());
		const std::vector<Rewind> none;
		const std::vector<Rewind> &have = rw ? *rw : none;	// damaged: add_rewind replaces it
		// The newest epoch, on the current timeline: nothing changes.
		if (rw && epoch >= newest_ && !abandoned_by(have, epoch))
			return {};
		if (!have.empty() && have.back().to == epoch && have.back().newest == newest_)
			return {};
		Status s = add_rewind(store_->vm_dir(), {epoch, newest_});
		if (!s.ok())
			return make_error(s.code(), "restore of epoch %llu: cannot record that epochs up to %llu are "
					  "another timeline now: %s", static_cast<unsigned long long>(epoch),
					  static_cast<unsigned long long>(newest_), s.message().c_str());
		SLS_LOG_INFO("%s: restored epoch %llu while %llu was the newest: epochs after %llu up to %llu are another "
			     "timeline now",
			     who().c_str(), static_cast<unsigned long long>(epoch),
			     static_cast<unsigned long long>(newest_), static_cast<unsigned long long>(epoch),
			     static_cast<unsigned long long>(newest_));
		return {};
	}

	int fd_;
	const ServerConfig &cfg_;
	std::mutex &mu_;
	std::set<std::string> &active_;
	pid_t pid_;
	std::string vm_;
	bool registered_ = false;
	bool handshaken_ = false;
	uint16_t version_ = 0;
	uint64_t recv_seq_ = 0, send_seq_ = 0;
	std::optional<Store> store_;
	std::optional<Uring> ring_;	// this connection's own io_uring
	UniqueFd staging_fd_;
	Mapping staging_;
	std::vector<RamBlockMem> blocks_;
	std::vector<proto::StagingBlock> hello_blocks_;
	std::unique_ptr<Compactor> compactor_;
	uint64_t newest_ = 0, last_epoch_ = 0;
	bool branch_pin_released_ = false;
	uint64_t last_acked_ = 0;	// last epoch acked durable on this connection (a delta's only valid parent)
};

} // namespace

Server::Server(ServerConfig cfg) : cfg_(std::move(cfg)) {}

Server::~Server() { stop(); }

Status Server::listen()
{
	if (cfg_.socket_path.size() >= sizeof(sockaddr_un::sun_path))
		return make_error(-ENAMETOOLONG, "socket path too long: %s", cfg_.socket_path.c_str());
	auto slash = cfg_.socket_path.rfind('/');
	if (slash != std::string::npos && slash > 0) {
		std::string dir = cfg_.socket_path.substr(0, slash);
		struct stat st;
		bool existed = ::stat(dir.c_str(), &st) == 0;
		SLS_TRY(make_dirs(dir, 0700));
		if (!existed && ::chmod(dir.c_str(), 0700) < 0)
			return errno_error("chmod 0700 " + dir);
	}
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, cfg_.socket_path.c_str(), cfg_.socket_path.size());
	// A socket file left behind by a dead daemon is removed; a live one is not.
	{
		UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		if (probe.valid() && ::connect(probe.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0)
			return make_error(-EADDRINUSE, "another slsvirtd is listening on %s", cfg_.socket_path.c_str());
		::unlink(cfg_.socket_path.c_str());
	}
	listen_fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!listen_fd_.valid())
		return errno_error("socket");
	mode_t old = ::umask(0177);
	int r = ::bind(listen_fd_.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
	int err = errno;
	::umask(old);
	if (r < 0)
		return errno_error(-err, "bind " + cfg_.socket_path);
	bound_ = true;
	if (::chmod(cfg_.socket_path.c_str(), 0600) < 0)
		return errno_error("chmod 0600 " + cfg_.socket_path);
	if (::listen(listen_fd_.get(), 64) < 0)
		return errno_error("listen");
	wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!wake_fd_.valid())
		return errno_error("eventfd");
	// Lazily restored VMs of an earlier slsvirtd still read their segment
	// files: hold them before any connection (and its compaction) starts.
	if (size_t held = open_segments::adopt(cfg_.store_root))
		SLS_LOG_INFO("holding %zu segment file(s) that running QEMUs still read (lazy restores of an earlier "
			     "slsvirtd)", held);
	SLS_LOG_INFO("listening on %s, store %s, retain %u, faults %s", cfg_.socket_path.c_str(),
		     cfg_.store_root.c_str(), cfg_.retain, cfg_.faults.describe().c_str());
	return {};
}

void Server::reap_finished()
{
	std::vector<std::shared_ptr<Conn>> finished;
	{
		std::lock_guard lk(mu_);
		auto it = std::partition(conns_.begin(), conns_.end(), [](const auto &c) { return !c->done.load(); });
		finished.assign(it, conns_.end());
		conns_.erase(it, conns_.end());
	}
	for (auto &c : finished)
		if (c->thread.joinable())
			c->thread.join();
}

void Server::serve(std::shared_ptr<Conn> c)
{
	{
		Session s(c->fd.get(), cfg_, mu_, active_vms_, c->pid);
		s.run();
	}
	::shutdown(c->fd.get(), SHUT_RDWR);
	handled_++;
	c->done = true;
}

Status Server::run()
{
	if (!listen_fd_.valid())
		return make_error(-EINVAL, "run() before listen()");
	while (!stopping_) {
		struct pollfd pfd[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
		int r = ::poll(pfd, 2, 1000);
		reap_finished();
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return errno_error("poll");
		}
		if (pfd[1].revents || stopping_)
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
		if (!fd.valid()) {
			if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
				SLS_LOG_WARN("accept: %s", strerror(errno));
			continue;
		}
		struct ucred cred{};
		socklen_t cl = sizeof(cred);
		if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
			SLS_LOG_WARN("SO_PEERCRED failed (%s): connection rejected", strerror(errno));
			continue;
		}
		if (cred.uid != ::geteuid() && cred.uid != 0) {
			SLS_LOG_WARN("rejected connection from pid %d uid %u (only uid %u or root may connect)",
				     static_cast<int>(cred.pid), static_cast<unsigned>(cred.uid),
				     static_cast<unsigned>(::geteuid()));
			continue;
		}
		auto c = std::make_shared<Conn>();
		c->fd = std::move(fd);
		c->pid = cred.pid;
		c->uid = cred.uid;
		std::lock_guard lk(mu_);
		conns_.push_back(c);
		c->thread = std::thread([this, c] { serve(c); });
	}
	return {};
}

Status Server::start_background()
{
	if (!listen_fd_.valid())
		SLS_TRY(listen());
	bg_ = std::thread([this] {
		Status s = run();
		if (!s.ok())
			SLS_LOG_ERROR("server: %s", s.message().c_str());
	});
	return {};
}

void Server::request_stop()
{
	stopping_ = true;
	if (wake_fd_.valid()) {
		uint64_t one = 1;
		ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
		(void)n;
	}
}

void Server::stop()
{
	request_stop();
	if (bg_.joinable())
		bg_.join();
	{
		std::lock_guard lk(mu_);
		for (auto &c : conns_)
			::shutdown(c->fd.get(), SHUT_RDWR);
	}
	for (;;) {
		std::shared_ptr<Conn> c;
		{
			std::lock_guard lk(mu_);
			if (conns_.empty())
				break;
			c = conns_.back();
			conns_.pop_back();
		}
		if (c->thread.joinable())
			c->thread.join();
	}
	if (bound_) {
		::unlink(cfg_.socket_path.c_str());
		bound_ = false;
	}
	listen_fd_.reset();
}

} // namespace slsvirt
