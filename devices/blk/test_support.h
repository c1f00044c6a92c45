// Test helpers shared by the blk tests: temporary files that clean up after themselves.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace moss::blk::testing {

// A fresh directory under /tmp (a real file system, so O_DIRECT and fallocate behave as on a
// host disk), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/moss-blk-test-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    EXPECT_NE(p, nullptr);
    path_ = p != nullptr ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Creates (or truncates) `name` to `size` bytes and returns its path.
  std::string file(const std::string& name, off_t size) const {
    std::string p = path_ + "/" + name;
    int fd = ::open(p.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << p;
    EXPECT_EQ(::ftruncate(fd, size), 0);
    ::close(fd);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace moss::blk::testing
