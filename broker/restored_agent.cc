#include "broker/restored_agent.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "base/log.h"
#include "broker/generation.h"
#include "guest/agent/client.h"
#include "guest/agent/protocol.h"

namespace moss {
namespace {

// One connection to the agent, tried every 100 ms until `deadline` or `stopping`.
Result<UniqueFd> connect_until(const std::string& socket, std::chrono::steady_clock::time_point deadline,
                               const std::atomic<bool>& stopping) {
  Result<UniqueFd> last = make_error("the guest's agent did not answer");
  while (!stopping && std::chrono::steady_clock::now() < deadline) {
    last = agent::connect_agent(socket, std::chrono::milliseconds(100));
    if (last) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (stopping) return make_error("the VM ended");
  return make_error("the restored guest's agent did not answer within " + std::to_string(kRestoredAgentTimeout.count()) +
                    " s: " + last.error().message);
}

}  // namespace

RestoredAgent::RestoredAgent(event_base* loop, std::string socket, uint64_t generation, std::optional<int64_t> realtime_ns,
                             bool for_command, std::function<void(Done)> done)
    : done_(std::move(done)) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  MOSS_ASSERT(fd >= 0);
  wake_.reset(fd);
  woken_ = Event::on_fd(loop, fd, EV_READ, [this](int, short) { finished(); });
  woken_.add();
  thread_ = std::thread([this, socket = std::move(socket), generation, realtime_ns, for_command] {
    auto deadline = std::chrono::steady_clock::now() + kRestoredAgentTimeout;
    auto first = connect_until(socket, deadline, stopping_);
    if (!first) {
      outcome_.generation = first.error();
    } else {
      // Before any command runs: the guest's new generation (fresh entropy, its number, the
      // clock stepped if asked).
      outcome_.generation = renew_generation(first->get(), generation, realtime_ns);
      if (outcome_.generation && for_command) {
        auto second = connect_until(socket, deadline, stopping_);
        if (second) outcome_.command = std::move(*second);
        else outcome_.generation = second.error();
      }
    }
    uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof one);
  });
}

RestoredAgent::~RestoredAgent() { stop(); }

void RestoredAgent::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  woken_.reset();
}

void RestoredAgent::finished() {
  if (thread_.joinable()) thread_.join();
  woken_.reset();
  if (done_) done_(std::move(outcome_));
}

}  // namespace moss
