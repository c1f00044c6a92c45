// The device workers of one VM, as the broker supervises them: their pids (reaped on
// SIGCHLD), a worker that dies while the VM runs (the VM is stopped, and the worker named),
// stopping them once the vcpu process is gone, and their control channels (ipc/worker.capnp),
// which this loop reads: `moss stats` asks every worker at once and answers when all have
// replied or the deadline has passed, so a wedged worker delays nothing but its own line.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/event.h"
#include "base/fd.h"
#include "broker/control.h"

namespace moss {

// A device worker the broker started for this VM.
struct StartedWorker {
  pid_t pid = -1;
  std::string kind;         // The device module's name: "blk", "vsock".
  std::string description;  // "blk worker for disk.img"; messages name it "the " + description.
  UniqueFd control;         // ipc/worker.capnp; invalid: the worker has no control channel.
};

// What the workers said to one stats round.
struct WorkerStatsRound {
  std::vector<control::DiskStats> disks;  // From the workers that answered, in worker order.
  std::vector<std::string> missing;       // "blk worker for d.img: did not answer within 500 ms"
};

class WorkerSupervisor {
 public:
  struct Hooks {
    // Reads what the vcpu process sent so far; true if the VM has ended already (its exit
    // report, or the process is gone), so that a worker's exit only followed it.
    std::function<bool()> vm_ended;
    // Stops the VM unless it is stopping or over already (then false).
    std::function<bool()> stop_vm;
  };
  using StatsDone = std::function<void(const WorkerStatsRound&)>;

  // The workers' control fds are made non-blocking and watched from `loop`.
  WorkerSupervisor(event_base* loop, std::vector<StartedWorker> workers, Hooks hooks);
  // Its events call back into it: it stays where it was made.
  WorkerSupervisor(const WorkerSupervisor&) = delete;
  WorkerSupervisor& operator=(const WorkerSupervisor&) = delete;

  // SIGCHLD: reaps the workers that exited and judges each death.
  void reap();
  // The vcpu process is gone, so each worker's connection closed and it is exiting: waits a
  // moment for each, then SIGTERM, then SIGKILL. Blocks; after the loop.
  void stop_all();

  // A worker died while the VM ran ("the blk worker for d.img (pid 7) was killed by ..."), or "".
  const std::string& failure() const { return failure_; }
  // The death is the VM's failure, not a clean exit that only followed the vcpu process out.
  bool failure_ended_vm() const { return !failure_.empty() && (!exit_clean_ || stopped_vm_); }

  // The workers still running, for `moss stats` (role: the description).
  std::vector<control::ProcessStats> process_stats() const;
  // Asks every live worker with a control channel for its stats; `done` runs from the loop once
  // all have answered or `deadline` has passed. A request while a round is under way joins it.
  void collect_stats(std::chrono::milliseconds deadline, StatsDone done);

 private:
  struct Supervised {
    StartedWorker w;
    bool reaped = false;
    Event readable;
    uint32_t outstanding = 0;  // Stats requests sent and not answered (a late reply is stale).
    bool asked = false;        // In the current round, and not yet answered.
    std::optional<control::DiskStats> answer;
    std::string problem;
  };
  struct Round {
    std::vector<StatsDone> clients;
    Event deadline;
    std::chrono::milliseconds limit;  // No initializer: clang wants Round complete for optional::emplace.
  };

  void judge_death(Supervised& s, int status);
  void read_control(Supervised& s);
  void take_reply(Supervised& s, std::span<const uint8_t> packet);
  void give_up(Supervised& s, std::string problem);
  void ask(Supervised& s);
  void maybe_finish_round();
  void finish_round();

  std::vector<std::unique_ptr<Supervised>> workers_;  // Stable addresses for the callbacks.
  Hooks hooks_;
  event_base* loop_;
  bool loop_over_ = false;  // stop_all(): the VM is over, nothing is left to judge or stop.
  std::string failure_;
  bool exit_clean_ = false;  // The failed worker exited with status 0 (its connection closed).
  bool stopped_vm_ = false;  // ... and the vcpu process did not follow within 1 s.
  Event failure_grace_;
  std::optional<Round> round_;
};

}  // namespace moss
