#include "guest/moss-init/cmdline.h"

namespace moss::guest {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// A decimal number from 1 to 2^32 - 1, digits only.
bool parse_port(std::string_view s, uint32_t* out) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0 || v > 0xffffffffu) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

ParseResult parse_cmdline(std::string_view cmdline) {
  ParseResult r;
  size_t i = 0;
  while (i < cmdline.size()) {
    while (i < cmdline.size() && is_space(cmdline[i])) i++;
    size_t start = i;
    while (i < cmdline.size() && !is_space(cmdline[i])) i++;
    std::string_view word = cmdline.substr(start, i - start);
    if (word.empty()) continue;
    size_t eq = word.find('=');
    std::string_view key = word.substr(0, eq);
    if (key != kDialKey) continue;
    std::string_view value = eq == std::string_view::npos ? std::string_view() : word.substr(eq + 1);
    if (!parse_port(value, &r.config.dial_port)) {
      r.error = std::string(kDialKey) + " needs a vsock port from 1 to 4294967295, not '" + std::string(value) + "'";
      return r;
    }
  }
  r.ok = true;
  return r;
}

std::string encode_dial(uint32_t port) { return std::string(kDialKey) + "=" + std::to_string(port); }

}  // namespace moss::guest
