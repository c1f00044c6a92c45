#include "broker/session.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/file.h"
#include "base/log.h"
#include "broker/clock.h"
#include "broker/launcher.h"
#include "broker/run.h"
#include "broker/generation.h"
#include "broker/stats_file.h"
#include "store/spore.h"

namespace moss {
namespace {

constexpr auto kWorkerStatsDeadline = std::chrono::milliseconds(500);
constexpr int kStopSignals[] = {SIGCHLD, SIGINT, SIGTERM, SIGHUP};

EventLoop make_loop() {
  // poll(2), not epoll: the command's stdin or stdout may be a regular file or /dev/null,
  // which epoll refuses and poll reports always ready; the loop has a handful of fds.
  auto loop = EventLoop::create_without_epoll();
  MOSS_ASSERT(loop.ok());
  return std::move(*loop);
}

}  // namespace

Session::Session(const cli::RunOptions& options, StartedVcpu vcpu, std::vector<StartedWorker> workers,
                 std::optional<control::Endpoint> endpoint, ConsoleSink console, std::unique_ptr<vmvsock::Plan> vsock,
                 SporeSource spore)
    : options_(options),
      spawn_ns_(vcpu.spawn_ns),
      ram_(std::move(vcpu.ram)),
      loop_(make_loop()),
      console_(std::move(console)),
      vsock_(std::move(vsock)),
      vcpu_(loop_.get(), vcpu.pid, std::move(vcpu.control),
            {[this](const uint8_t* data, size_t size) { console_.write(data, size); }, [this] { loop_.break_loop(); }}),
      workers_(loop_.get(), std::move(workers),
               {[this] { return vcpu_.reaped() || (vcpu_.drain(), vcpu_.has_exit()); }, [this] { return stop_vm(); }}),
      command_(loop_.get(), options, vsock_.get(),
               {[this] { return vm_ending(); }, [this] { stop_vm(); },
                [this](const char* data, size_t size) { vcpu_.console_input(data, size); },
                options.create_spore.empty() ? std::function<void(UniqueFd)>()
                                             : [this](UniqueFd agent) { create_spore(std::move(agent)); }}),
      spore_(std::move(spore)) {
  if (endpoint) {
    control_.emplace(loop_.get(), std::move(*endpoint),
                     ControlServer::Hooks{[this](auto answer) { stats(std::move(answer)); },
                                          [this] {
                                            if (stop_requested_ || stop_signal_) return;
                                            stop_requested_ = true;
                                            vcpu_.stop();
                                          },
                                          [this](bool p, auto done) { pause(p, std::move(done)); },
                                          [this] { return agent_connection(); },
                                          [this](const control::SuspendArgs& a, auto done) { suspend(a, std::move(done)); }});
  }
  for (int sig : kStopSignals) {
    signals_.push_back(Event::on_signal(loop_.get(), sig, [this](int s, short) { on_signal(s); }));
    signals_.back().add();
  }
}

int Session::run() {
  // run_vm() blocked these before the fork so that none is lost; libevent owns them now.
  sigset_t handled;
  sigemptyset(&handled);
  for (int s : kStopSignals) sigaddset(&handled, s);
  sigprocmask(SIG_UNBLOCK, &handled, nullptr);
  // The child may have exited before the SIGCHLD handler was installed.
  on_signal(SIGCHLD);
  if (spore_.generation > 0 && vsock_ && !vcpu_.reaped()) {
    // A restored VM. GENERATION HANDOFF: its agent gets the new generation (broker/generation.h)
    // before any command runs.
    std::optional<int64_t> realtime;
    if (options_.realtime_clock) realtime = realtime_now_ns();
    restored_agent_ = std::make_unique<RestoredAgent>(loop_.get(), vsock_->socket_path(), spore_.generation, realtime,
                                                      options_.has_command,
                                                      [this](RestoredAgent::Done d) { restored_agent_done(std::move(d)); });
  }
  if (!vcpu_.reaped()) loop_.dispatch();
  restored_agent_.reset();      // Gives up on an agent that never answered.
  finish_suspend_after_loop();  // A spore still being written when the VM ended.
  signals_.clear();
  command_.close();
  workers_.stop_all();
  if (control_) control_->close();  // The name is free again only once every process of the VM is gone.
  int status = finish();
  vsock_.reset();  // Its sockets and the CID, now that the worker is gone.
  return status;
}

void Session::on_signal(int sig) {
  if (sig == SIGCHLD) {
    workers_.reap();
    vcpu_.reap();  // Once reaped, it ends the loop.
    return;
  }
  if (stop_signal_ == 0 && command_.forward_signal(sig)) return;
  if (stop_signal_ == 0) {
    stop_signal_ = sig;
    vcpu_.stop();
  } else {
    vcpu_.kill("was asked twice to stop");
  }
}

bool Session::stop_vm() {
  if (vcpu_.has_exit() || vcpu_.reaped() || stop_signal_ || stop_requested_) return false;
  vcpu_.stop();
  return true;
}

bool Session::vm_ending() const {
  return vcpu_.has_exit() || vcpu_.reaped() || stop_requested_ || stop_signal_ || !workers_.failure().empty();
}

void Session::stats(std::function<void(const control::VmStats&)> answer) {
  control::VmStats s;
  s.name = options_.name;
  s.state = stop_signal_ || stop_requested_ || vcpu_.has_exit() ? "stopping"
            : suspend_                                             ? "suspending"
            : vcpu_.paused()                                       ? "paused"
                                                                   : "running";
  s.uptime_ms = (monotonic_ns() - spawn_ns_) / 1000000;
  s.cpus = options_.cpus;
  s.mem_bytes = options_.mem_bytes;
  if (vsock_) {
    s.vsock_cid = vsock_->cid();
    s.vsock_socket = vsock_->socket_path();
  }
  s.processes.push_back(control::process_stats("broker", getpid()));
  s.processes.push_back(control::process_stats("vcpu", vcpu_.pid()));
  for (auto& p : workers_.process_stats()) s.processes.push_back(std::move(p));
  for (const auto& d : options_.disks) s.disks.push_back(d.path + (d.readonly ? ",ro" : ""));
  // The workers answer from the loop: a wedged one costs its own line, not the loop.
  workers_.collect_stats(kWorkerStatsDeadline, [s, answer](const WorkerStatsRound& round) mutable {
    s.disk_stats = round.disks;
    s.missing_stats = round.missing;
    answer(s);
  });
}

void Session::pause(bool pause, std::function<void(const Result<void>&)> done) {
  if (vcpu_.has_exit() || stop_signal_ || stop_requested_) {
    done(make_error("the VM is stopping"));
    return;
  }
  if (suspend_) {
    done(make_error("the VM is being suspended"));
    return;
  }
  vcpu_.set_paused(pause, std::move(done));
}

Result<UniqueFd> Session::agent_connection() {
  // moss exec: the control socket is the access control; the connection goes to the agent's
  // port only (the broker sends CONNECT), and the client reads the worker's answer.
  if (vm_ending()) return make_error("the VM is stopping");
  if (vcpu_.paused()) return make_error("the VM is paused (moss resume " + options_.name + " lets it run)");
  if (!vsock_) return make_error("the VM has no vsock device, so no agent can be reached");
  auto sock = vsock_->connect_agent();
  if (!sock) return make_error("cannot reach the VM's vsock worker: " + sock.error().message);
  return sock;
}

int Session::finish() {
  if (!options_.stats_file.empty()) write_stats();
  const agent::ExecClient* client = command_.client();
  if (client && client->finished() && client->outcome()) {
    // The command's outcome is known and its output written: that is moss run's result,
    // however the VM went down after it.
    const auto& outcome = *client->outcome();
    if (!outcome.message.empty()) std::fprintf(stderr, "moss: %s\n", outcome.message.c_str());
    return outcome.shell_status();
  }
  // The session with the agent broke while the VM ran on, and we powered the guest off: no
  // reason but the session's.
  if (client && client->finished() && command_.shutdown_sent() && vcpu_.protocol_error().empty() &&
      workers_.failure().empty() && vcpu_.has_exit() && vcpu_.exit().reason == ipc::ExitInfo::Reason::GUEST_STATUS) {
    std::fprintf(stderr, "moss: lost the command in the guest: %s\n", client->outcome().error().message.c_str());
    return kExitFailure;
  }
  // The command never finished: whatever ended the VM (a failure, or a signal to a guest that
  // never dialled), its console says how far the guest got.
  int status = finish_vm();
  if (options_.has_command && status != 0) {
    std::string tail = console_.tail();
    if (!console_.file().empty()) {
      std::fprintf(stderr, "moss: the guest console is in %s\n", console_.file().c_str());
    } else if (!tail.empty() && !console_.to_stdout()) {
      std::fprintf(stderr, "moss: the guest console's last lines:\n%s%s", tail.c_str(), tail.back() == '\n' ? "" : "\n");
    }
  }
  return status;
}

void Session::write_stats() const {
  RunTimes t{spawn_ns_, vcpu_.first_run_ns(), vcpu_.first_exit_ns(), command_.agent_connected_ns(),
             command_.command_exited_ns()};
  write_stats_file(options_.stats_file, t, vcpu_.usage());
}

void Session::create_spore(UniqueFd agent) {
  create_agent_ = std::move(agent);
  LOG_INFO("the guest's agent is up; capturing the VM into %s", options_.create_spore.c_str());
  control::SuspendArgs args;
  auto spore = store::absolute_path(options_.create_spore);
  auto store_dir = options_.store_dir.empty() ? store::default_store_dir() : store::absolute_path(options_.store_dir);
  auto fail = [this](const std::string& why) {
    agent_failure_ = "no spore was made: " + why;
    stop_vm();
  };
  if (!spore) return fail(spore.error().message);
  if (!store_dir) return fail(store_dir.error().message);
  args.spore = *spore;
  args.store = *store_dir;
  suspend(args, [this, fail](const Result<std::string>& outcome) {
    create_agent_.reset();
    if (!outcome) fail(outcome.error().message);
  });
}

void Session::restored_agent_done(RestoredAgent::Done done) {
  if (!done.generation) {
    LOG_WARN("the restored guest did not take its new generation: %s", done.generation.error().message.c_str());
    if (options_.has_command && !vm_ending()) {
      agent_failure_ = "the command did not run: " + done.generation.error().message;
      stop_vm();
    }
    return;
  }
  LOG_INFO("the restored guest took generation %llu", static_cast<unsigned long long>(spore_.generation));
  if (done.command) command_.start_command(std::move(*done.command));
}

// finish() without a command's outcome: how the VM ended.
int Session::finish_vm() {
  using R = ipc::ExitInfo::Reason;
  const VcpuExit& x = vcpu_.exit();
  if (!vcpu_.protocol_error().empty()) {
    std::fprintf(stderr, "moss: %s\n", vcpu_.protocol_error().c_str());
    return kExitFailure;
  }
  if (!agent_failure_.empty() && vcpu_.has_exit() && x.reason == R::STOPPED) {
    std::fprintf(stderr, "moss: %s; the VM was stopped\n", agent_failure_.c_str());
    return kExitFailure;
  }
  if (!command_.boot_failure().empty() && vcpu_.has_exit() && x.reason == R::STOPPED) {
    std::fprintf(stderr, "moss: %s; the VM was stopped\n", command_.boot_failure().c_str());
    return kExitFailure;
  }
  // A worker that ended cleanly only followed the vcpu process out, unless the VM ran on
  // without it and had to be stopped.
  if (workers_.failure_ended_vm()) {
    std::fprintf(stderr, "moss: %s; the VM was stopped\n", workers_.failure().c_str());
    return kExitFailure;
  }
  if (!vcpu_.has_exit()) {
    std::fprintf(stderr, "moss: the vcpu process (pid %d) %s before the VM ended; the VM is gone\n", vcpu_.pid(),
                 describe_wait_status(vcpu_.wait_status()).c_str());
    return kExitFailure;
  }
  switch (x.reason) {
    case R::GUEST_STATUS:
      if (options_.has_command) {
        // moss-init's own status: the command's comes over the agent.
        std::fprintf(stderr, "moss: the guest ended with status %d %s\n", x.status & 0xff,
                     command_.client() ? "before the command finished" : "before its agent connected to run the command");
        return kExitFailure;
      }
      return x.status & 0xff;
    case R::STOPPED:
      if (!suspended_to_.empty() && !stop_requested_ && !stop_signal_) {
        std::fprintf(stderr, "moss: the VM was suspended to %s\n", suspended_to_.c_str());
        return 0;
      }
      if (stop_requested_ && !stop_signal_) {
        std::fprintf(stderr, "moss: the VM was stopped (moss stop %s)\n", options_.name.c_str());
        return 128 + SIGTERM;  // As if it had been sent SIGTERM, which is what moss stop means.
      }
      std::fprintf(stderr, "moss: the VM was stopped (%s)\n", stop_signal_ ? sigabbrev_np(stop_signal_) : "by request");
      return stop_signal_ ? 128 + stop_signal_ : kExitFailure;
    case R::RESET:
    case R::POWER_OFF:
      if (options_.has_command) {
        std::fprintf(stderr, "moss: %s before the command reported its exit status\n", x.message.c_str());
        return kExitFailure;
      }
      return 0;
    case R::ERROR:
      std::fprintf(stderr, "moss: the VM failed: %s\n", x.message.c_str());
      return kExitFailure;
  }
  return kExitFailure;
}

}  // namespace moss
