#include "broker/generation.h"

#include <sys/random.h>
#include <time.h>

#include <cerrno>

#include "guest/agent/client.h"

namespace moss {

int64_t realtime_now_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

Result<void> renew_generation(int agent_fd, uint64_t generation, std::optional<int64_t> realtime_ns,
                              std::chrono::milliseconds timeout) {
  return agent::renew_generation(agent_fd, generation, realtime_ns.value_or(0), timeout);
}

Result<uint64_t> fresh_generation() {
  for (;;) {
    uint64_t g = 0;
    ssize_t r = getrandom(&g, sizeof g, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r != static_cast<ssize_t>(sizeof g)) return sys_error("draw", "a generation number (getrandom)");
    g &= ~(1ull << 63);
    if (g != 0) return g;
  }
}

}  // namespace moss
