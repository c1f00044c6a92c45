// One running VM, as the broker sees it: a thin coordinator that owns the event loop and wires
// the parts together. The parts:
//   VcpuLink          the vcpu process: its control channel and its life (broker/vcpu_link.h)
//   WorkerSupervisor  the device workers (broker/worker_supervisor.h)
//   CommandSession    the command, stdio and the terminal (broker/command_session.h)
//   ControlServer     moss stop/pause/resume/stats NAME (broker/control_server.h)
// The coordinator decides what the VM-wide facts mean (is the VM stopping, why it ended) and
// turns them into moss's exit status.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "base/event.h"
#include "base/fd.h"
#include "broker/cli.h"
#include "broker/command_session.h"
#include "broker/console_sink.h"
#include "broker/control.h"
#include "broker/control_server.h"
#include "broker/vcpu_link.h"
#include "broker/vm_vsock.h"
#include "broker/worker_supervisor.h"

namespace moss {

// The started vcpu process: its pid, the broker's end of its control channel, when it was spawned.
struct StartedVcpu {
  pid_t pid = -1;
  UniqueFd control;
  uint64_t spawn_ns = 0;
  UniqueFd ram;  // Guest RAM's memfd, which the vcpu process maps (read for a spore).
};

class Session {
 public:
  // run_vm() blocked SIGCHLD, SIGINT, SIGTERM and SIGHUP before starting any child; run()
  // unblocks them once the loop handles them.
  Session(const cli::RunOptions& options, StartedVcpu vcpu, std::vector<StartedWorker> workers,
          std::optional<control::Endpoint> endpoint, ConsoleSink console, std::unique_ptr<vmvsock::Plan> vsock);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Supervises the VM until it has ended and every process of it is gone; moss's exit status.
  int run();

 private:
  void on_signal(int sig);
  bool stop_vm();  // Unless it is stopping or over already (then false).
  bool vm_ending() const;
  void stats(std::function<void(const control::VmStats&)> answer);
  void pause(bool pause, std::function<void(const Result<void>&)> done);
  Result<UniqueFd> agent_connection();  // For moss exec (ControlServer::Hooks::agent).
  int finish();
  int finish_vm();
  void write_stats() const;

  const cli::RunOptions& options_;
  uint64_t spawn_ns_;
  UniqueFd ram_;    // Guest RAM (StartedVcpu::ram).
  EventLoop loop_;  // First: every part's events go before it.
  ConsoleSink console_;
  std::unique_ptr<vmvsock::Plan> vsock_;
  VcpuLink vcpu_;
  WorkerSupervisor workers_;
  CommandSession command_;
  std::optional<ControlServer> control_;
  std::vector<Event> signals_;
  bool stop_requested_ = false;  // moss stop NAME.
  int stop_signal_ = 0;          // SIGINT, SIGTERM or SIGHUP to moss itself.
};

}  // namespace moss
