// Small helpers the vsock harness tests share: text as bytes and back, a seeded byte pattern
// (so both ends can check a stream without keeping a copy), and a send that finishes.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moss::harness {

inline std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
inline std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

// `n` bytes of an xorshift stream from `seed`: different seeds, different bytes.
inline std::vector<uint8_t> pattern(uint64_t seed, size_t n) {
  std::vector<uint8_t> out(n);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(x);
  }
  return out;
}

// Sends all of `b` on the stream socket `fd` (no SIGPIPE); false if the peer went away.
inline bool write_all(int fd, std::span<const uint8_t> b) {
  while (!b.empty()) {
    ssize_t n = ::send(fd, b.data(), b.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    b = b.subspan(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace moss::harness
