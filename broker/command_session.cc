#include "broker/command_session.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "base/log.h"
#include "broker/clock.h"
#include "broker/run.h"
#include "broker/vcpu_link.h"

namespace moss {

CommandSession::CommandSession(event_base* loop, const cli::RunOptions& options, vmvsock::Plan* vsock, Hooks hooks)
    : loop_(loop), options_(options), vsock_(vsock), hooks_(std::move(hooks)) {
  // Without a command the console is the VM's terminal; typed input goes to it. With one,
  // stdin is the command's (through the agent).
  if (!options_.has_command && isatty(STDIN_FILENO)) {
    stdin_ = Event::on_fd(loop, STDIN_FILENO, EV_READ | EV_PERSIST, [this](int, short) { read_stdin(); });
    stdin_.add();
  }
  shutdown_grace_ = Event::timer(loop, [this](int, short) { guest_ignores_shutdown(); });
  boot_timeout_ = Event::timer(loop, [this](int, short) { boot_timed_out(); });
  if ((options_.has_command || !options_.create_spore.empty()) && options_.boot_timeout_s > 0) {
    boot_timeout_.add(std::chrono::seconds(options_.boot_timeout_s));
  }
  if (vsock_) {
    agent_dial_ = Event::on_fd(loop, vsock_->connect_channel(), EV_READ | EV_PERSIST, [this](int, short) { accept_agent(); });
    agent_dial_.add();
  }
}

CommandSession::~CommandSession() = default;

void CommandSession::close() {
  stdin_.reset();
  agent_dial_.reset();
  if (command_) command_->close();
  shutdown_grace_.reset();
  boot_timeout_.reset();
}

bool CommandSession::forward_signal(int sig) {
  // While the command runs, signals are its (as if it ran here); the third stops the VM, for a
  // program that ignores them.
  if (!command_running() || ++forwarded_signals_ >= 3) return false;
  return command_->forward_signal(sig);
}

void CommandSession::accept_agent() {
  // The vsock worker asks for its guest connections to host ports; the first to the agent's
  // port is moss-init's, and comes to us on a socketpair only the worker holds the other end
  // of (no socket on disk that another process could reach first).
  auto agent = vsock_->serve_connect_requests();
  if (vsock_->connect_channel() < 0 && agent_dial_) {  // The worker is gone: our own event goes.
    agent_dial_.reset();
  }
  if (!agent || command_) return;
  if (!options_.has_command && hooks_.agent_up) {
    boot_timeout_.del();
    hooks_.agent_up(std::move(*agent));
    return;
  }
  start_command(std::move(*agent));
}

void CommandSession::start_command(UniqueFd agent) {
  if (command_ || !options_.has_command) return;
  boot_timeout_.del();
  agent_connected_ns_ = monotonic_ns();
  command_ = std::make_unique<AgentCommand>(loop_, std::move(agent),
                                            AgentCommand::Options{options_.command, options_.env, options_.workdir, options_.tty},
                                            [this] { command_done(); });
}

void CommandSession::command_done() {
  command_exited_ns_ = monotonic_ns();
  // The command is done and its output written: power the guest off (moss-init syncs its file
  // systems first), and stop the VM if it does not go in time. Unless the VM is ending anyway
  // (a stop, a dead worker: then the session broke because of it).
  if (hooks_.vm_ending()) return;
  const auto& outcome = command_->client().outcome();
  command_->request_shutdown(outcome ? outcome->shell_status() & 0xff : kExitFailure);
  shutdown_sent_ = true;
  shutdown_grace_.add(std::chrono::seconds(kStopGraceSeconds));
}

void CommandSession::boot_timed_out() {
  if (command_ || hooks_.vm_ending()) return;
  boot_failure_ = "the guest's agent did not connect within " + std::to_string(options_.boot_timeout_s) +
                  " s of the start (--boot-timeout), so " +
                  (options_.has_command ? "the command never ran" : "no spore was made");
  hooks_.stop_vm();
}

void CommandSession::guest_ignores_shutdown() {
  if (hooks_.vm_ending()) return;
  LOG_WARN("the guest did not power off after the command ended; stopping the VM");
  hooks_.stop_vm();
}

void CommandSession::read_stdin() {
  char buf[4096];
  ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
  if (n <= 0) {
    if (n < 0 && errno == EINTR) return;
    stdin_.del();  // EOF: the UART has no way to say it; the guest just sees no more input.
    return;
  }
  hooks_.console_input(buf, static_cast<size_t>(n));
}

}  // namespace moss
