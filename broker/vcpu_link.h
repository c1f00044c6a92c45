// The broker's end of the vcpu process: the control socketpair made at spawn (ipc/vcpu.capnp)
// and the process's life. Requests go out (stop, pause, resume, console input); answers, the
// guest's console bytes and the exit report come in from the loop. A process that does not
// stop in time is killed; one that lingers after the VM ended is killed, then left.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <capnp/message.h>

#include "base/event.h"
#include "base/fd.h"
#include "base/result.h"
#include "ipc/vcpu.capnp.h"

namespace moss {

constexpr int kStopGraceSeconds = 5;  // After a stop request, then SIGKILL.
constexpr int kExitGraceSeconds = 5;  // After the exit report, then SIGKILL; again, then give up.

struct VcpuExit {
  ipc::ExitInfo::Reason reason = ipc::ExitInfo::Reason::ERROR;
  int32_t status = 0;
  std::string message;
};

class VcpuLink {
 public:
  struct Hooks {
    std::function<void(const uint8_t* data, size_t size)> console;  // The guest console's bytes.
    // The process was reaped, or is stuck in the kernel for good: the loop has nothing left.
    std::function<void()> ended;
  };
  using PauseDone = std::function<void(const Result<void>&)>;

  // `control`: the broker's end of the socketpair (made non-blocking here).
  VcpuLink(event_base* loop, pid_t pid, UniqueFd control, Hooks hooks);
  // Its events call back into it: it stays where it was made.
  VcpuLink(const VcpuLink&) = delete;
  VcpuLink& operator=(const VcpuLink&) = delete;

  pid_t pid() const { return pid_; }
  // Asks the vcpu process to end the VM; SIGKILL if it is not gone kStopGraceSeconds later.
  void stop();
  void kill(const char* why);
  // Pauses or resumes the vCPUs; `done` gets the vcpu process's answer (answers come in order).
  void set_paused(bool pause, PauseDone done);
  // Whether the machine's state can be saved (every device's backend has DEVICE_STATE): ok,
  // or the vcpu process's sentence naming the device that cannot.
  void check_save(PauseDone done);
  // The whole machine's state, only while paused (ipc/vcpu.capnp saveMachineState), copied
  // into a message of its own (root: ipc::MachineState).
  using StateDone = std::function<void(Result<std::unique_ptr<capnp::MallocMessageBuilder>>)>;
  void save_machine(StateDone done);
  void console_input(const char* data, size_t size);
  // Reads every message the vcpu process sent so far (its exit report, say).
  void drain();
  // On SIGCHLD: reaps the process if it has exited, then reads what it sent before. True once
  // reaped (and then `ended` was called).
  bool reap();

  bool has_exit() const { return have_exit_; }
  const VcpuExit& exit() const { return exit_; }
  bool reaped() const { return reaped_; }
  int wait_status() const { return wait_status_; }
  const rusage& usage() const { return usage_; }
  bool paused() const { return paused_; }
  const std::string& protocol_error() const { return protocol_error_; }
  uint64_t first_run_ns() const { return first_run_ns_; }
  uint64_t first_exit_ns() const { return first_exit_ns_; }

 private:
  bool handle_packet(ipc::VcpuToBroker::Reader msg);
  void record_exit(ipc::ExitInfo::Reader x);
  void lingers();
  Result<void> send(const std::function<void(ipc::BrokerToVcpu::Builder)>& fill);

  pid_t pid_;
  UniqueFd control_;
  Hooks hooks_;
  Event readable_, stop_grace_, exit_grace_;
  // Requests the vcpu process has not answered, oldest first: each gets its answer, or the
  // error why none comes.
  using Waiter = std::function<void(const Result<ipc::VcpuToBroker::Reader>&)>;
  void request(const std::function<void(ipc::BrokerToVcpu::Builder)>& fill, Waiter waiter);
  void answer(const Result<ipc::VcpuToBroker::Reader>& answer);
  std::deque<Waiter> waiting_;
  bool paused_ = false;
  bool have_exit_ = false;
  VcpuExit exit_;
  bool reaped_ = false;
  int wait_status_ = 0;
  rusage usage_{};
  int lingering_ = 0;  // How many times the exit grace period ran out.
  uint64_t first_run_ns_ = 0, first_exit_ns_ = 0;
  std::string protocol_error_;
};

}  // namespace moss
