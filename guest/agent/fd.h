// Fd: sole owner of a file descriptor (the guest side's own, as guest/ does not link base/).
#pragma once

#include <unistd.h>

namespace moss::agent {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  ~Fd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);  // EINTR still closes on Linux; nothing to do about errors.
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace moss::agent
