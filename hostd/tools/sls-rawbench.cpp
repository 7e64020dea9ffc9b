// sls-rawbench: the raw io_uring sequential writer hostd's bandwidth is
// compared against (bench/). Writes --size bytes in --block writes, up to
// --qd in flight, an fdatasync every --fdatasync-every blocks (drained
// behind the writes) and one at the end; prints one JSON object.
#include <fcntl.h>
#include <liburing.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

uint64_t parse_size(const char *s)
{
	char *end;
	double v = strtod(s, &end);
	uint64_t m = 1;
	switch (*end) {
	case 'k': case 'K': m = 1ull << 10; break;
	case 'm': case 'M': m = 1ull << 20; break;
	case 'g': case 'G': m = 1ull << 30; break;
	case '\0': break;
	default: return 0;
	}
	return static_cast<uint64_t>(v * static_cast<double>(m));
}

double now_s()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

int usage()
{
	fprintf(stderr, "usage: sls-rawbench --file F [--size 1G] [--block 1M] [--fdatasync-every N] [--qd 8] "
			"[--direct] [--keep]\n");
	return 2;
}

} // namespace

int main(int argc, char **argv)
{
	std::string file;
	uint64_t size = 1ull << 30, block = 1ull << 20, sync_every = 0;
	unsigned qd = 8;
	bool direct = false, keep = false;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		auto val = [&]() -> const char * { return i + 1 < argc ? argv[++i] : nullptr; };
		const char *v = nullptr;
		if (a == "--file" && (v = val()))
			file = v;
		else if (a == "--size" && (v = val()))
			size = parse_size(v);
		else if (a == "--block" && (v = val()))
			block = parse_size(v);
		else if (a == "--fdatasync-every" && (v = val()))
			sync_every = strtoull(v, nullptr, 10);
		else if (a == "--qd" && (v = val()))
			qd = static_cast<unsigned>(strtoul(v, nullptr, 10));
		else if (a == "--direct")
			direct = true;
		else if (a == "--keep")
			keep = true;
		else
			return usage();
	}
	if (file.empty() || !size || !block || block % 4096 || !qd || qd > 256)
		return usage();
	int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600);
	if (fd < 0) {
		fprintf(stderr, "sls-rawbench: open %s: %s\n", file.c_str(), strerror(errno));
		return 1;
	}
	void *buf = nullptr;
	if (posix_memalign(&buf, 4096, block))
		return 1;
	for (uint64_t i = 0; i < block; i++)
		static_cast<unsigned char *>(buf)[i] = static_cast<unsigned char>(i * 131 + 7);
	io_uring ring;
	if (int r = io_uring_queue_init(2 * qd + 2, &ring, 0); r < 0) {
		fprintf(stderr, "sls-rawbench: io_uring_queue_init: %s\n", strerror(-r));
		return 1;
	}
	const uint64_t nblocks = (size + block - 1) / block;
	uint64_t submitted = 0, completed = 0, syncs = 0, since_sync = 0;
	unsigned inflight = 0;
	int err = 0;
	const double t0 = now_s();
	// user_data: block number + 1 for writes, 0 for fdatasync.
	while (completed < nblocks + syncs || submitted < nblocks) {
		while (submitted < nblocks && inflight < qd) {
			io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			io_uring_prep_write(sqe, fd, buf, static_cast<unsigned>(block), submitted * block);
			io_uring_sqe_set_data64(sqe, submitted + 1);
			submitted++;
			inflight++;
			if (sync_every && ++since_sync == sync_every) {
				since_sync = 0;
				sqe = io_uring_get_sqe(&ring);
				io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
				sqe->flags |= IOSQE_IO_DRAIN;
				io_uring_sqe_set_data64(sqe, 0);
				syncs++;
				inflight++;
			}
		}
		io_uring_submit_and_wait(&ring, 1);
		io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			n++;
			if (cqe->res < 0)
				err = cqe->res;
			else if (cqe->user_data && static_cast<uint64_t>(cqe->res) != block)
				err = -EIO;	// a benchmark does not resume: report
		}
		io_uring_cq_advance(&ring, n);
		completed += n;
		inflight -= n;
		if (err)
			break;
	}
	if (!err && fdatasync(fd) < 0)
		err = -errno;
	const double secs = now_s() - t0;
	close(fd);
	if (!keep)
		unlink(file.c_str());
	io_uring_queue_exit(&ring);
	free(buf);
	if (err) {
		fprintf(stderr, "sls-rawbench: %s\n", strerror(-err));
		return 1;
	}
	const double mib = static_cast<double>(nblocks * block) / (1 << 20);
	printf("{\"tool\":\"sls-rawbench\",\"bytes\":%llu,\"block\":%llu,\"fdatasync_every\":%llu,\"qd\":%u,"
	       "\"direct\":%s,\"seconds\":%.4f,\"mib_s\":%.1f}\n",
	       static_cast<unsigned long long>(nblocks * block), static_cast<unsigned long long>(block),
	       static_cast<unsigned long long>(sync_every), qd, direct ? "true" : "false", secs, mib / secs);
	return 0;
}
