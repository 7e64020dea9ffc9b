// Result helpers, RAII fd/mapping, small file utilities.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "slsvirt/fd.hpp"
#include "slsvirt/result.hpp"

namespace slsvirt {

std::string vstrf(const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(nullptr, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return fmt;
	std::string s(static_cast<size_t>(n) + 1, '\0');
	vsnprintf(s.data(), s.size(), fmt, ap);
	s.resize(static_cast<size_t>(n));
	return s;
}

std::string strf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	std::string s = vstrf(fmt, ap);
	va_end(ap);
	return s;
}

Error make_error(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	std::string s = vstrf(fmt, ap);
	va_end(ap);
	return Error{code > 0 ? -code : (code == 0 ? -EIO : code), std::move(s)};
}

Error errno_error(int neg_errno, const std::string &what)
{
	int e = neg_errno < 0 ? -neg_errno : neg_errno;
	if (e == 0)
		e = EIO;
	return Error{-e, what + ": " + strerror(e)};
}

Error errno_error(const std::string &what) { return errno_error(-errno, what); }

void UniqueFd::reset(int fd)
{
	if (fd_ >= 0)
		::close(fd_);
	fd_ = fd;
}

Mapping &Mapping::operator=(Mapping &&o) noexcept
{
	if (this != &o) {
		reset();
		addr_ = std::exchange(o.addr_, nullptr);
		len_ = std::exchange(o.len_, 0);
	}
	return *this;
}

void Mapping::reset()
{
	if (addr_)
		munmap(addr_, len_);
	addr_ = nullptr;
	len_ = 0;
}

Result<Mapping> Mapping::map_shared(int fd, size_t len)
{
	if (len == 0)
		return make_error(-EINVAL, "cannot map 0 bytes");
	void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return errno_error(strf("mmap %zu bytes", len));
	Mapping m;
	m.addr_ = p;
	m.len_ = len;
	return m;
}

Status read_full(int fd, void *buf, size_t len, const char *what)
{
	auto *p = static_cast<unsigned char *>(buf);
	size_t done = 0;
	while (done < len) {
		ssize_t n = ::read(fd, p + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno_error(what);
		}
		if (n == 0)
			return make_error(-EPIPE, "%s: end of stream after %zu of %zu bytes", what, done, len);
		done += static_cast<size_t>(n);
	}
	return {};
}

Status write_full(int fd, const void *buf, size_t len, const char *what)
{
	auto *p = static_cast<const unsigned char *>(buf);
	size_t done = 0;
	while (done < len) {
		ssize_t n = ::write(fd, p + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno_error(what);
		}
		done += static_cast<size_t>(n);
	}
	return {};
}

Status pread_full(int fd, void *buf, size_t len, off_t off, const std::string &what)
{
	auto *p = static_cast<unsigned char *>(buf);
	size_t done = 0;
	while (done < len) {
		ssize_t n = ::pread(fd, p + done, len - done, off + static_cast<off_t>(done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno_error(what);
		}
		if (n == 0)
			return make_error(-ENODATA, "%s: end of file at offset %lld", what.c_str(),
					  static_cast<long long>(off + static_cast<off_t>(done)));
		done += static_cast<size_t>(n);
	}
	return {};
}

Result<std::string> read_small_file(const std::string &path, size_t max_len)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.valid())
		return errno_error("open " + path);
	struct stat st;
	if (fstat(fd.get(), &st) < 0)
		return errno_error("stat " + path);
	if (static_cast<uint64_t>(st.st_size) > max_len)
		return make_error(-EFBIG, "%s: %lld bytes, more than the %zu allowed", path.c_str(),
				  static_cast<long long>(st.st_size), max_len);
	std::string s(static_cast<size_t>(st.st_size), '\0');
	SLS_TRY(pread_full(fd.get(), s.data(), s.size(), 0, "read " + path));
	return s;
}

Status fsync_dir(const std::string &dir)
{
	UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!fd.valid())
		return errno_error("open directory " + dir);
	if (::fsync(fd.get()) < 0)
		return errno_error("fsync directory " + dir);
	return {};
}

Status write_file_atomic(const std::string &path, const std::string &data, unsigned mode)
{
	std::string tmp = path + ".tmp";
	UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
	if (!fd.valid())
		return errno_error("create " + tmp);
	SLS_TRY(write_full(fd.get(), data.data(), data.size(), "write vm config"));
	if (::fsync(fd.get()) < 0)
		return errno_error("fsync " + tmp);
	fd.reset();
	if (::rename(tmp.c_str(), path.c_str()) < 0)
		return errno_error("rename " + tmp);
	auto slash = path.rfind('/');
	return fsync_dir(slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash)));
}

Status make_dirs(const std::string &path, unsigned mode)
{
	if (path.empty())
		return make_error(-EINVAL, "empty directory path");
	std::string cur;
	size_t pos = 0;
	while (pos != std::string::npos) {
		size_t next = path.find('/', pos + 1);
		cur = path.substr(0, next);
		pos = next;
		if (cur.empty() || cur == "/")
			continue;
		if (::mkdir(cur.c_str(), mode) < 0 && errno != EEXIST)
			return errno_error("mkdir " + cur);
	}
	struct stat st;
	if (::stat(path.c_str(), &st) < 0)
		return errno_error("stat " + path);
	if (!S_ISDIR(st.st_mode))
		return make_error(-ENOTDIR, "%s exists and is not a directory", path.c_str());
	return {};
}

} // namespace slsvirt
