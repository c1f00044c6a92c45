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
#include <string>
#include <thread>
#include <vector>

#include "base/event.h"
#include "base/fd.h"
#include "broker/cli.h"
#include "broker/command_session.h"
#include "broker/console_sink.h"
#include "broker/control.h"
#include "broker/control_server.h"
#include "broker/restored_agent.h"
#include "broker/spore_manifest.h"
#include "broker/vcpu_link.h"
#include "broker/vm_vsock.h"
#include "broker/worker_supervisor.h"
#include "store/spore.h"

namespace moss {

// The started vcpu process: its pid, the broker's end of its control channel, when it was spawned.
struct StartedVcpu {
  pid_t pid = -1;
  UniqueFd control;
  uint64_t spawn_ns = 0;
  UniqueFd ram;  // Guest RAM's memfd, which the vcpu process maps (read for a spore).
};

// What a suspend records of the VM besides the vcpu process's state (broker/spore_manifest.h).
struct SporeSource {
  std::vector<sporemf::DeviceSource> devices;  // In guest order; their records are taken while the VM is paused.
  std::string cmdline;
  uint64_t generation = 0;      // The running VM's: 0 when booted, a spore's + 1 when restored.
};

// A suspend under way (broker/session_suspend.cc): the client's answer, the writer thread and
// what it reports through `wake`.
struct SuspendJob {
  control::SuspendArgs args;
  std::function<void(const Result<std::string>&)> done;
  bool answered = false;
  // The VM was paused by `moss pause` before the suspend: it stays paused whatever happens
  // (a spore of a paused VM is what Firecracker takes too), and resumes only by moss resume.
  bool user_paused = false;
  // The writer thread and its outcome, which it posts through `wake` when done.
  std::thread writer;
  UniqueFd wake;
  Event woken;
  Result<store::SporeWritten> written = make_error("the spore was not written");

  void answer(const Result<std::string>& outcome) {
    if (answered) return;
    answered = true;
    done(outcome);
  }
};


class Session {
 public:
  // run_vm() blocked SIGCHLD, SIGINT, SIGTERM and SIGHUP before starting any child; run()
  // unblocks them once the loop handles them.
  Session(const cli::RunOptions& options, StartedVcpu vcpu, std::vector<StartedWorker> workers,
          std::optional<control::Endpoint> endpoint, ConsoleSink console, std::unique_ptr<vmvsock::Plan> vsock,
          SporeSource spore = {});
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // Supervises the VM until it has ended and every process of it is gone; moss's exit status.
  int run();

 private:
  void on_signal(int sig);
  bool stop_vm();  // Unless it is stopping or over already (then false).
  bool vm_ending() const;
  void stats(std::function<void(const control::VmStats&)> answer);
  void pause(bool pause, std::function<void(const Result<void>&)> done);
  // moss suspend: checkSave, pause, saveMachineState, then the spore is written on a thread
  // of its own (the loop keeps serving the vcpu process, the workers and signals; the VM is
  // paused meanwhile), then the VM stops or resumes. `done` gets one sentence either way.
  using SuspendDone = std::function<void(const Result<std::string>&)>;
  void suspend(const control::SuspendArgs& args, SuspendDone done);
  void suspend_failed(const Error& error, bool paused);
  void start_spore_writer(std::unique_ptr<capnp::MallocMessageBuilder> state);
  void spore_written();
  void finish_suspend_after_loop();
  // moss spore create: the guest's agent is up; capture the VM into the spore.
  void create_spore(UniqueFd agent);
  // A restored VM's agent took its new generation (or not); a command runs next.
  void restored_agent_done(RestoredAgent::Done done);
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
  SporeSource spore_;
  std::unique_ptr<SuspendJob> suspend_;
  std::string suspended_to_;     // The spore a suspend wrote before it stopped the VM.
  UniqueFd create_agent_;        // moss spore create: the agent's connection, held until the capture.
  std::unique_ptr<RestoredAgent> restored_agent_;
  std::string agent_failure_;    // Why a spore create or a restored VM's command could not go on.
  bool stop_requested_ = false;  // moss stop NAME.
  int stop_signal_ = 0;          // SIGINT, SIGTERM or SIGHUP to moss itself.
};

}  // namespace moss
