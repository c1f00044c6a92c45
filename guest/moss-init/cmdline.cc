#include "cmdline.h"

#include <cstddef>
#include <utility>

namespace moss::guest {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
         c == '\f';
}

// Decodes `value` of key `key`; prefixes errors with the key.
bool decode_value(std::string_view key, std::string_view value,
                  std::vector<std::string>* out, std::string* error) {
  std::string err;
  if (!decode_strings(value, out, &err)) {
    *error = std::string(key) + ": " + err;
    return false;
  }
  return true;
}

}  // namespace

bool decode_strings(std::string_view hex, std::vector<std::string>* out,
                    std::string* error) {
  out->clear();
  if (hex.size() % 2 != 0) {
    *error = "odd number of hex digits (" + std::to_string(hex.size()) + ")";
    return false;
  }
  std::string current;
  bool open = false;  // bytes seen since the last NUL
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = hex_value(hex[i]);
    int lo = hex_value(hex[i + 1]);
    if (hi < 0 || lo < 0) {
      *error = "bad hex digit at offset " + std::to_string(hi < 0 ? i : i + 1);
      return false;
    }
    char byte = static_cast<char>((hi << 4) | lo);
    if (byte == '\0') {
      out->push_back(std::move(current));
      current.clear();
      open = false;
    } else {
      current.push_back(byte);
      open = true;
    }
  }
  if (open) {
    *error = "missing trailing NUL";
    out->clear();
    return false;
  }
  return true;
}

std::string encode_strings(const std::vector<std::string>& strings) {
  static constexpr char kDigits[] = "0123456789abcdef";
  size_t n = 0;
  for (const auto& s : strings) n += 2 * (s.size() + 1);
  std::string hex;
  hex.reserve(n);
  for (const auto& s : strings) {
    for (unsigned char c : s) {
      hex.push_back(kDigits[c >> 4]);
      hex.push_back(kDigits[c & 15]);
    }
    hex.append("00");
  }
  return hex;
}

std::string encode_cmdline(const std::vector<std::string>& argv,
                           const std::vector<std::string>& env,
                           std::string_view cwd) {
  std::string out(kArgvKey);
  out += '=';
  out += encode_strings(argv);
  if (!env.empty()) {
    out += ' ';
    out += kEnvKey;
    out += '=';
    out += encode_strings(env);
  }
  if (!cwd.empty()) {
    out += ' ';
    out += kCwdKey;
    out += '=';
    out += encode_strings({std::string(cwd)});
  }
  return out;
}

ParseResult parse_cmdline(std::string_view cmdline) {
  ParseResult result;
  // Last occurrence of each key wins.
  std::string_view argv_value, env_value, cwd_value;
  bool have_argv = false, have_env = false, have_cwd = false;

  size_t i = 0;
  while (i < cmdline.size()) {
    while (i < cmdline.size() && is_space(cmdline[i])) ++i;
    size_t start = i;
    while (i < cmdline.size() && !is_space(cmdline[i])) ++i;
    std::string_view word = cmdline.substr(start, i - start);
    if (word.empty()) continue;
    size_t eq = word.find('=');
    std::string_view key = word.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : word.substr(eq + 1);
    if (key == kArgvKey) {
      argv_value = value;
      have_argv = true;
    } else if (key == kEnvKey) {
      env_value = value;
      have_env = true;
    } else if (key == kCwdKey) {
      cwd_value = value;
      have_cwd = true;
    }
  }

  GuestCommand cmd;  // moved into the result only on success
  if (have_argv) {
    if (!decode_value(kArgvKey, argv_value, &cmd.argv, &result.error))
      return result;
    if (cmd.argv.empty()) {
      result.error = std::string(kArgvKey) + ": empty argv";
      return result;
    }
    if (cmd.argv[0].empty()) {
      result.error = std::string(kArgvKey) + ": empty argv[0]";
      return result;
    }
    cmd.has_argv = true;
  }
  if (have_env) {
    if (!decode_value(kEnvKey, env_value, &cmd.env, &result.error))
      return result;
    for (const auto& e : cmd.env) {
      size_t eq = e.find('=');
      if (eq == std::string::npos || eq == 0) {
        result.error = std::string(kEnvKey) + ": entry is not KEY=VALUE";
        return result;
      }
    }
  }
  if (have_cwd) {
    std::vector<std::string> cwd;
    if (!decode_value(kCwdKey, cwd_value, &cwd, &result.error)) return result;
    if (cwd.size() != 1 || cwd[0].empty()) {
      result.error = std::string(kCwdKey) + ": expected one non-empty string";
      return result;
    }
    cmd.cwd = std::move(cwd[0]);
  }
  result.command = std::move(cmd);
  result.ok = true;
  return result;
}

}  // namespace moss::guest
