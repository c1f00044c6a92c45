#include "vcpu/console_buffer.h"

#include <unistd.h>

#include <utility>

#include "base/log.h"

namespace moss {

void ConsoleBuffer::put(uint8_t b) {
  std::lock_guard<std::mutex> lock(mu_);
  if (buf_.size() >= max_bytes_) {
    if (dropped_++ == 0) LOG_WARN("the guest console is %zu bytes ahead of the broker; dropping output", buf_.size());
    return;
  }
  bool was_empty = buf_.empty();
  buf_.push_back(static_cast<char>(b));
  if (was_empty) {
    uint64_t one = 1;
    if (write(event_fd_, &one, sizeof one) < 0) LOG_ERROR("cannot wake the console sender");
  }
}

std::string ConsoleBuffer::take() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(buf_, {});
}

uint64_t ConsoleBuffer::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace moss
