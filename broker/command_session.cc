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
  if (options_.has_command && options_.boot_timeout_s > 0) {
    boot_timeout_.add(std::chrono::seconds(options_.boot_timeout_s));
  }
  if (vsock_) {
    agent_dial_ = Event::on_fd(loop, vsock_->connect_channel(), EV_READ | EV_PERSIST, [this](int, short) { accept_agent(); });
    agent_dial_.add();
  }
  if (options_.tty) {
    winch_ = Event::on_signal(loop, SIGWINCH, [this](int, short) {
      winsize ws{};
      if (client_ && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) client_->resize(ws.ws_row, ws.ws_col);
    });
    winch_.add();
  }
}

CommandSession::~CommandSession() { restore_terminal(); }

void CommandSession::close() {
  stdin_.reset();
  agent_dial_.reset();
  winch_.reset();
  agent_watches_.clear();
  shutdown_grace_.reset();
  boot_timeout_.reset();
  restore_terminal();
}

bool CommandSession::forward_signal(int sig) {
  // While the command runs, signals are its (as if it ran here); the third stops the VM, for a
  // program that ignores them.
  if (!command_running() || ++forwarded_signals_ >= 3) return false;
  client_->forward_signal(sig);
  sync_agent();
  return true;
}

void CommandSession::accept_agent() {
  // The vsock worker asks for its guest connections to host ports; the first to the agent's
  // port is moss-init's, and comes to us on a socketpair only the worker holds the other end
  // of (no socket on disk that another process could reach first).
  auto agent = vsock_->serve_connect_requests();
  if (vsock_->connect_channel() < 0 && agent_dial_) {  // The worker is gone: our own event goes.
    agent_dial_.reset();
  }
  if (!agent || client_) return;
  agent_connected_ns_ = monotonic_ns();
  agent::ExecRequest req = exec_request();
  client_ = std::make_unique<agent::ExecClient>(std::move(*agent), req,
                                                agent::ExecClient::UserFds{STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO});
  sync_agent();
}

agent::ExecRequest CommandSession::exec_request() {
  agent::ExecRequest req;
  req.argv = options_.command;
  req.env = options_.env;
  req.cwd = options_.workdir;
  if (options_.tty) {
    req.mode = agent::Mode::kPty;
    winsize ws{};
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
      req.rows = ws.ws_row;
      req.cols = ws.ws_col;
    }
    if (const char* term = getenv("TERM")) req.env.insert(req.env.begin(), std::string("TERM=") + term);
    set_raw_terminal();
  }
  return req;
}

void CommandSession::agent_ready(int fd, short what) {
  short revents = 0;
  if (what & EV_READ) revents |= POLLIN;
  if (what & EV_WRITE) revents |= POLLOUT;
  client_->on_ready(fd, revents);
  sync_agent();
}

// Watches what the client asks for now. The loop uses poll(2) (see Session), where adding and
// removing events is bookkeeping, not system calls, and regular files count as always ready.
// Called from a watch's own callback, it destroys that event: nothing of it is touched after.
void CommandSession::sync_agent() {
  agent_watches_.clear();
  if (client_->finished() && !shutdown_sent_ && command_exited_ns_ == 0) command_done();
  if (client_->finished() && !shutdown_sent_) return;
  if (shutdown_sent_ && client_->flushed()) return;  // Nothing more to say; the VM goes down.
  for (const auto& w : client_->watches()) {
    short events = EV_PERSIST;
    if (w.events & POLLIN) events |= EV_READ;
    if (w.events & POLLOUT) events |= EV_WRITE;
    agent_watches_.push_back(Event::on_fd(loop_, w.fd, events, [this](int fd, short what) { agent_ready(fd, what); }));
    agent_watches_.back().add();
  }
}

void CommandSession::command_done() {
  command_exited_ns_ = monotonic_ns();
  restore_terminal();
  // The command is done and its output written: power the guest off (moss-init syncs its file
  // systems first), and stop the VM if it does not go in time. Unless the VM is ending anyway
  // (a stop, a dead worker: then the session broke because of it).
  if (hooks_.vm_ending()) return;
  const auto& outcome = client_->outcome();
  client_->request_shutdown(outcome ? outcome->shell_status() & 0xff : kExitFailure);
  shutdown_sent_ = true;
  shutdown_grace_.add(std::chrono::seconds(kStopGraceSeconds));
}

void CommandSession::boot_timed_out() {
  if (client_ || hooks_.vm_ending()) return;
  boot_failure_ = "the guest's agent did not connect within " + std::to_string(options_.boot_timeout_s) +
                  " s of the start (--boot-timeout), so the command never ran";
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

void CommandSession::set_raw_terminal() {
  if (raw_terminal_ || tcgetattr(STDIN_FILENO, &saved_termios_) != 0) return;
  termios raw = saved_termios_;
  cfmakeraw(&raw);
  if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) raw_terminal_ = true;
}

void CommandSession::restore_terminal() {
  if (!raw_terminal_) return;
  tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios_);
  raw_terminal_ = false;
}

}  // namespace moss
