#include "broker/exec.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <thread>

#include "base/event.h"
#include "broker/control.h"
#include "broker/exec_session.h"
#include "broker/run.h"
#include "guest/agent/client.h"

namespace moss {

namespace {

std::string span_text(std::chrono::milliseconds t) {
  return t.count() % 1000 == 0 ? std::to_string(t.count() / 1000) + " s" : std::to_string(t.count()) + " ms";
}

}  // namespace

Result<UniqueFd> connect_vm_agent(const std::string& dir, const std::string& name, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    MOSS_TRY(UniqueFd sock, control::request_agent(dir, name));
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left < std::chrono::milliseconds(1)) left = std::chrono::milliseconds(1);
    bool not_listening = false;
    auto answered = agent::vsock_handshake_answer(sock.get(), agent::kAgentPort, left, &not_listening);
    if (answered) return sock;
    if (!not_listening) {
      if (answered.error().kind == Error::Kind::kTimeout) {
        return timeout_error("the guest agent of the VM named " + name + " did not answer within " +
                             span_text(timeout));
      }
      return make_error("cannot reach the guest agent of the VM named " + name + ": " + answered.error().message);
    }
    if (Clock::now() + std::chrono::milliseconds(50) >= deadline) {
      return timeout_error("the guest agent of the VM named " + name + " was not listening within " +
                           span_text(timeout) + " (is the guest up, with moss-init?)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int exec_command(const cli::Command& command) {
  MOSS_ASSERT(command.run.has_command);
  std::string dir = control::runtime_dir();
  if (auto d = control::open_runtime_dir(dir, /*create=*/false); !d && d.error().err != ENOENT) {
    std::fprintf(stderr, "moss: %s\n", d.error().message.c_str());
    return kExitFailure;
  }
  // A user's stdout that went away is EPIPE, passed on to the program as the end of its stdout.
  signal(SIGPIPE, SIG_IGN);
  auto sock = connect_vm_agent(dir, command.vm_name, kExecConnectTimeout);
  if (!sock) {
    std::fprintf(stderr, "moss: %s\n", sock.error().message.c_str());
    return kExitFailure;
  }
  auto loop = EventLoop::create_without_epoll();  // stdin/stdout may be regular files.
  if (!loop) {
    std::fprintf(stderr, "moss: %s\n", loop.error().message.c_str());
    return kExitFailure;
  }
  const cli::RunOptions& o = command.run;
  AgentCommand cmd(loop->get(), std::move(*sock), AgentCommand::Options{o.command, o.env, o.workdir, o.tty},
                   [&] { loop->break_loop(); });
  // Signals are the program's, as with moss run; the third gives up on it (closing the
  // connection, on which the agent kills it).
  int signals = 0, gave_up = 0;
  std::vector<Event> handlers;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    handlers.push_back(Event::on_signal(loop->get(), sig, [&](int s, short) {
      if (++signals >= 3 || !cmd.forward_signal(s)) {
        gave_up = s;
        loop->break_loop();
      }
    }));
    handlers.back().add();
  }
  loop->dispatch();
  handlers.clear();
  cmd.close();
  if (gave_up != 0 && cmd.running()) {
    std::fprintf(stderr, "moss: gave up on the command in the VM named %s (%s)\n", command.vm_name.c_str(),
                 sigabbrev_np(gave_up));
    return 128 + gave_up;
  }
  const auto& outcome = cmd.client().outcome();
  if (!outcome) {
    std::fprintf(stderr, "moss: lost the command in the VM named %s: %s\n", command.vm_name.c_str(),
                 outcome.error().message.c_str());
    return kExitFailure;
  }
  if (!outcome->message.empty()) std::fprintf(stderr, "moss: %s\n", outcome->message.c_str());
  return outcome->shell_status();
}

}  // namespace moss
