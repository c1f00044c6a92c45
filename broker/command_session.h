// The user's side of `moss run`: the command (moss run -- CMD) and the terminal.
//
// With a command, moss-init dials the host when its agent is up: the vsock worker's connect
// request for the agent's port comes in on the vsock plan's connect channel (which also
// carries the worker's other connect requests), and the command runs over that connection
// (AgentCommand, broker/exec_session.h, driven by this loop) with the user's stdin, stdout and
// stderr; -t puts the terminal in raw mode and passes window sizes on. Signals go to the command while it
// runs. When it is done the guest is asked to power off, and stopped if it does not. A guest
// whose agent never dials is stopped at --boot-timeout. Without a command, a terminal's typed
// input goes to the guest console.
#pragma once

#include <termios.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "guest/agent/client.h"
#include "base/event.h"
#include "broker/cli.h"
#include "broker/exec_session.h"
#include "broker/vm_vsock.h"

namespace moss {

class CommandSession {
 public:
  struct Hooks {
    std::function<bool()> vm_ending;  // The VM is over or on its way out.
    std::function<void()> stop_vm;    // Asks the vcpu process to stop the VM.
    std::function<void(const char* data, size_t size)> console_input;
    // moss spore create (no command): the guest's agent dialled, so it is up; the connection
    // is the hook's. Null: not wanted.
    std::function<void(UniqueFd agent)> agent_up;
  };

  // `vsock` (may be null: no vsock device) outlives this.
  CommandSession(event_base* loop, const cli::RunOptions& options, vmvsock::Plan* vsock, Hooks hooks);
  ~CommandSession();  // Leaves the terminal as it found it.
  // Its events call back into it: it stays where it was made.
  CommandSession(const CommandSession&) = delete;
  CommandSession& operator=(const CommandSession&) = delete;

  // SIGINT, SIGTERM or SIGHUP: passes it to the running command (true), the first two times;
  // false when there is no command running or it was told twice already.
  bool forward_signal(int sig);
  // The loop is over: leaves the terminal as it was and watches nothing more.
  void close();
  // Runs the command over `agent`, a connection the broker made to the guest's agent (a
  // restored VM, whose agent dialled before its spore was taken), as if the guest had dialled.
  void start_command(UniqueFd agent);

  // For moss's result: the command's client (null: the agent never connected), and so on.
  const agent::ExecClient* client() const { return command_ ? &command_->client() : nullptr; }
  bool shutdown_sent() const { return shutdown_sent_; }
  const std::string& boot_failure() const { return boot_failure_; }
  uint64_t agent_connected_ns() const { return agent_connected_ns_; }
  uint64_t command_exited_ns() const { return command_exited_ns_; }

 private:
  void accept_agent();
  void command_done();
  void boot_timed_out();
  void guest_ignores_shutdown();
  void read_stdin();
  bool command_running() const { return command_ && command_->running(); }

  event_base* loop_;
  const cli::RunOptions& options_;
  vmvsock::Plan* vsock_;
  Hooks hooks_;
  Event stdin_, agent_dial_, boot_timeout_, shutdown_grace_;
  std::unique_ptr<AgentCommand> command_;  // The command, once the agent connected.
  std::string boot_failure_;          // The agent did not connect within --boot-timeout.
  bool shutdown_sent_ = false;
  int forwarded_signals_ = 0;
  uint64_t agent_connected_ns_ = 0, command_exited_ns_ = 0;
};

}  // namespace moss
