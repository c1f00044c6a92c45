// The broker's side of a named VM's control socket (broker/control.h): `moss stop`, `pause`,
// `resume`, `stats` and `exec` from other processes, served from the broker's loop. Nothing here
// blocks: a client is read when its request arrives (one that sends none within 2 s is
// dropped), and answered when the answer is known (pause and resume once the vcpu process
// says so, stats once the workers have answered or their deadline has passed).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "base/event.h"
#include "base/fd.h"
#include "base/result.h"
#include "broker/control.h"

namespace moss {

class ControlServer {
 public:
  struct Hooks {
    // Gathers the VM's stats and passes them to `answer` (at once or later, from the loop).
    std::function<void(std::function<void(const control::VmStats&)> answer)> stats;
    std::function<void()> stop;  // After the client was told "stopping".
    // Pauses or resumes the VM and passes the outcome to `done` (from the loop).
    std::function<void(bool pause, std::function<void(const Result<void>&)> done)> pause;
    // A socket to the guest agent on which CONNECT was sent (moss exec); must not block.
    std::function<Result<UniqueFd>()> agent;
    // Writes the VM into a spore and passes the outcome (a sentence) to `done` (from the loop).
    std::function<void(const control::SuspendArgs& args, std::function<void(const Result<std::string>&)> done)> suspend;
  };

  ControlServer(event_base* loop, control::Endpoint endpoint, Hooks hooks);
  // Its events call back into it: it stays where it was made.
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  // Frees the VM's name (removes its socket and lock) and drops the clients still waiting to
  // be read. Answers still owed go to connections that stay open until then.
  void close();

 private:
  struct Client {
    std::shared_ptr<UniqueFd> conn;  // Shared with the answer still owed to it.
    Event readable;
  };
  void accept_clients();
  void read_request(uint64_t id, short what);
  void serve(std::shared_ptr<UniqueFd> conn, const control::Request& request);

  event_base* loop_;
  std::optional<control::Endpoint> endpoint_;
  Hooks hooks_;
  Event listening_;
  std::map<uint64_t, Client> reading_;  // Accepted, request not read yet.
  uint64_t next_id_ = 0;
};

}  // namespace moss
