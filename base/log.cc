#include "base/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace moss {
namespace {
const char* g_role = "moss";
LogLevel g_level = LogLevel::kWarn;
}  // namespace

void log_init(const char* role) {
  g_role = role;
  const char* env = std::getenv("MOSS_LOG");
  if (env == nullptr) return;
  if (!std::strcmp(env, "error")) g_level = LogLevel::kError;
  else if (!std::strcmp(env, "warn")) g_level = LogLevel::kWarn;
  else if (!std::strcmp(env, "info")) g_level = LogLevel::kInfo;
  else if (!std::strcmp(env, "debug")) g_level = LogLevel::kDebug;
}

bool log_enabled(LogLevel level) { return level <= g_level; }

void log_message(LogLevel level, const char* fmt, ...) {
  static const char* const kNames[] = {"error", "warning", "info", "debug"};
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  // One write per line so lines from several processes do not interleave mid-line.
  std::fprintf(stderr, "%s: %s%s%s\n", g_role, level == LogLevel::kError ? "" : kNames[static_cast<int>(level)],
               level == LogLevel::kError ? "" : ": ", buf);
}

}  // namespace moss
