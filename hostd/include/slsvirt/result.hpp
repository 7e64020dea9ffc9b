// Errors as values: Status (ok or -errno + message) and Result<T>.
#pragma once

#include <cerrno>
#include <cstdarg>
#include <string>
#include <utility>
#include <variant>

namespace slsvirt {

// printf-style formatting into a std::string (g++ 12 has no std::format).
[[nodiscard]] std::string strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
[[nodiscard]] std::string vstrf(const char *fmt, va_list ap);

struct Error {
	int code = -EIO;	// negative errno
	std::string message;	// human-readable, already includes context
};

// Builds an Error; `code` is a negative errno (positive values are negated).
[[nodiscard]] Error make_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Error from the current errno: "<what>: <strerror(errno)>".
[[nodiscard]] Error errno_error(const std::string &what);
[[nodiscard]] Error errno_error(int neg_errno, const std::string &what);

class [[nodiscard]] Status {
public:
	Status() = default;
	Status(Error e) : err_(std::move(e)), failed_(true) {}
	static Status ok_status() { return Status(); }

	bool ok() const { return !failed_; }
	explicit operator bool() const { return ok(); }
	int code() const { return failed_ ? err_.code : 0; }
	const std::string &message() const { return err_.message; }
	const Error &error() const { return err_; }
	// Prefixes the message with context, keeps the code.
	Status &context(const std::string &what)
	{
		if (failed_)
			err_.message = what + ": " + err_.message;
		return *this;
	}
	// For the rare caller that has decided a failure needs no handling.
	void ignore() const {}

private:
	Error err_;
	bool failed_ = false;
};

template <typename T>
class [[nodiscard]] Result {
public:
	Result(T v) : v_(std::in_place_index<0>, std::move(v)) {}
	Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}
	Result(Status s) : v_(std::in_place_index<1>, s.error()) {}

	bool ok() const { return v_.index() == 0; }
	explicit operator bool() const { return ok(); }
	T &value() & { return std::get<0>(v_); }
	const T &value() const & { return std::get<0>(v_); }
	T &&value() && { return std::get<0>(std::move(v_)); }
	T *operator->() { return &std::get<0>(v_); }
	const T *operator->() const { return &std::get<0>(v_); }
	T &operator*() { return value(); }
	const T &operator*() const { return value(); }
	const Error &error() const { return std::get<1>(v_); }
	int code() const { return ok() ? 0 : error().code; }
	const std::string &message() const
	{
		static const std::string empty;
		return ok() ? empty : error().message;
	}
	Status status() const { return ok() ? Status() : Status(error()); }

private:
	std::variant<T, Error> v_;
};

} // namespace slsvirt

// Propagate a failed Status/Result from the current function.
#define SLS_TRY(expr)                                                  \
	do {                                                           \
		auto sls_try_s_ = (expr);                              \
		if (!sls_try_s_.ok())                                  \
			return sls_try_s_.error();                    \
	} while (0)
