// Small helpers the harness tests share: text as bytes and back, a seeded byte pattern (so both
// ends can check a stream or an image without keeping a copy), a send that finishes, reading
// back a file's bytes, and notes recorded in a test's output.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <iostream>
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

// `n` bytes of the file at `path` from `offset`; a short read fails the test.
inline std::vector<uint8_t> file_bytes(const std::string& path, uint64_t offset, size_t n) {
  std::vector<uint8_t> out(n);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  if (fd < 0) return {};
  ssize_t got = ::pread(fd, out.data(), n, static_cast<off_t>(offset));
  ::close(fd);
  EXPECT_EQ(got, static_cast<ssize_t>(n));
  return out;
}

// Reports a result that is recorded, not asserted (shown in the test's output and XML).
inline void note(const std::string& key, const std::string& text) {
  std::cout << "[   NOTE   ] " << text << std::endl;
  ::testing::Test::RecordProperty(key, text);
}

}  // namespace moss::harness
