#include "broker/generation.h"

#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>

#include "guest/agent/protocol.h"

namespace moss {
namespace {

using Clock = std::chrono::steady_clock;

Result<std::string> host_entropy(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return sys_error("draw", "entropy for the guest (getrandom)");
    got += static_cast<size_t>(r);
  }
  return out;
}

// Waits for `events` on `fd` until `deadline`: false on the time-out.
Result<bool> wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return sys_error("wait for", "the guest agent");
    if (r > 0) return true;
  }
}

}  // namespace

int64_t realtime_now_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

Result<void> renew_generation(int fd, uint64_t generation, std::optional<int64_t> realtime_ns,
                              std::chrono::milliseconds timeout) {
  using agent::Direction;
  using agent::Frame;
  using agent::MsgType;
  MOSS_ASSERT(generation >= 1);
  MOSS_ASSERT(!realtime_ns || *realtime_ns > 0);
  Clock::time_point deadline = Clock::now() + timeout;
  std::string out;
  Frame hello;
  hello.type = MsgType::kHello;
  hello.version_min = hello.version_max = agent::kGenerationVersion;
  MOSS_ASSERT(agent::encode(Direction::kToAgent, hello, &out).ok());
  Frame g;
  g.type = MsgType::kGeneration;
  g.generation = generation;
  g.realtime_ns = realtime_ns.value_or(0);
  MOSS_TRY(g.data, host_entropy(kGenerationEntropyBytes));
  MOSS_ASSERT(agent::encode(Direction::kToAgent, g, &out).ok());

  const std::string late = "the guest agent did not acknowledge generation " + std::to_string(generation) + " within " +
                           std::to_string(timeout.count()) + " ms";
  size_t sent = 0;
  while (sent < out.size()) {
    ssize_t w = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
      sent += static_cast<size_t>(w);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return sys_error("send", "the new generation to the guest agent");
    MOSS_TRY(bool ready, wait_for(fd, POLLOUT, deadline));
    if (!ready) return timeout_error(late);
  }

  agent::Decoder dec(Direction::kToHost);
  bool hello_seen = false;
  for (;;) {
    Frame f;
    agent::DecodeStatus s;
    while ((s = dec.next(&f)) == agent::DecodeStatus::kFrame) {
      if (f.type == MsgType::kError) {
        return make_error("the guest agent refused the new generation: " + f.data);
      }
      if (!hello_seen) {
        if (f.type != MsgType::kHello || f.version_min != agent::kGenerationVersion)
          return make_error("the guest agent answered something else than HELLO version 2");
        hello_seen = true;
        continue;
      }
      if (f.type != MsgType::kGenerationAck || f.generation != generation)
        return make_error("the guest agent answered the new generation with " + std::string(agent::type_name(f.type)));
      return {};
    }
    if (s == agent::DecodeStatus::kError) {
      return make_error("the guest agent sent a bad message: " + dec.error()->message);
    }
    char buf[4096];
    ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) {
      dec.feed(buf, static_cast<size_t>(r));
      continue;
    }
    if (r == 0) return make_error("the guest agent closed the connection before acknowledging the new generation");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return sys_error("read", "the guest agent's answer");
    MOSS_TRY(bool ready, wait_for(fd, POLLIN, deadline));
    if (!ready) return timeout_error(late);
  }
}

}  // namespace moss
