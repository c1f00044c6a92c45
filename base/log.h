// Levelled logging to stderr, prefixed with the process role ("moss", "moss-vcpu", ...).
// The level comes from MOSS_LOG (error, warn, info, debug); default warn.
#pragma once

#include <cstdarg>

namespace moss {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void log_init(const char* role);  // Reads MOSS_LOG once.
bool log_enabled(LogLevel level);
void log_message(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace moss

#define MOSS_LOG(level, ...)                                                      \
  do {                                                                            \
    if (::moss::log_enabled(::moss::LogLevel::level)) ::moss::log_message(::moss::LogLevel::level, __VA_ARGS__); \
  } while (0)
#define LOG_ERROR(...) MOSS_LOG(kError, __VA_ARGS__)
#define LOG_WARN(...) MOSS_LOG(kWarn, __VA_ARGS__)
#define LOG_INFO(...) MOSS_LOG(kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) MOSS_LOG(kDebug, __VA_ARGS__)
