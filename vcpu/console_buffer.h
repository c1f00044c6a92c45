// The guest console's output on its way to the broker: vCPU threads put bytes, the control
// loop takes them in batches (vcpu/main.cc sends at most one every kConsoleBatchNs). The
// buffer writes its eventfd only when it goes from empty to not empty, so a loop that waits
// before taking is not woken again meanwhile. At most kConsoleMaxBytes wait: a guest that
// floods its UART while the broker does not read cannot grow this process without bound;
// what is beyond is dropped and counted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace moss {

inline constexpr uint64_t kConsoleBatchNs = 2'000'000;
inline constexpr size_t kConsoleMaxBytes = 4 << 20;

class ConsoleBuffer {
 public:
  explicit ConsoleBuffer(int event_fd, size_t max_bytes = kConsoleMaxBytes)
      : event_fd_(event_fd), max_bytes_(max_bytes) {}
  void put(uint8_t b);
  std::string take();
  uint64_t dropped() const;

 private:
  const int event_fd_;
  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::string buf_;
  uint64_t dropped_ = 0;
};

}  // namespace moss
