// A process-wide line logger: one line per call, timestamped, thread-safe.
#pragma once

#include <string>

namespace slsvirt {

enum class LogLevel { debug, info, warn, error };

// Sends log lines to path (appended) instead of stderr; "" = stderr.
[[nodiscard]] bool log_open(const std::string &path);
void log_set_level(LogLevel min);
void log_line(LogLevel lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

} // namespace slsvirt

#define SLS_LOG_DEBUG(...) ::slsvirt::log_line(::slsvirt::LogLevel::debug, __VA_ARGS__)
#define SLS_LOG_INFO(...) ::slsvirt::log_line(::slsvirt::LogLevel::info, __VA_ARGS__)
#define SLS_LOG_WARN(...) ::slsvirt::log_line(::slsvirt::LogLevel::warn, __VA_ARGS__)
#define SLS_LOG_ERROR(...) ::slsvirt::log_line(::slsvirt::LogLevel::error, __VA_ARGS__)
