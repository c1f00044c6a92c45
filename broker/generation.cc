#include "broker/generation.h"

#include <time.h>

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

}  // namespace moss
