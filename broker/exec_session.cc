#include "broker/exec_session.h"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>

namespace moss {

agent::ExecRequest AgentCommand::request(const Options& o, bool* raw) {
  agent::ExecRequest req;
  req.argv = o.command;
  req.env = o.env;
  req.cwd = o.workdir;
  *raw = false;
  if (o.tty) {
    req.mode = agent::Mode::kPty;
    winsize ws{};
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
      req.rows = ws.ws_row;
      req.cols = ws.ws_col;
    }
    if (const char* term = getenv("TERM")) req.env.insert(req.env.begin(), std::string("TERM=") + term);
    *raw = true;
  }
  return req;
}

AgentCommand::AgentCommand(event_base* loop, UniqueFd agent, const Options& options, std::function<void()> finished)
    : loop_(loop),
      client_(std::move(agent), request(options, &raw_wanted_), agent::ExecClient::UserFds{STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}),
      finished_(std::move(finished)) {
  if (raw_wanted_ && tcgetattr(STDIN_FILENO, &saved_termios_) == 0) {
    termios raw = saved_termios_;
    cfmakeraw(&raw);
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) raw_terminal_ = true;
  }
  if (options.tty) {
    winch_ = Event::on_signal(loop, SIGWINCH, [this](int, short) {
      winsize ws{};
      if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) client_.resize(ws.ws_row, ws.ws_col);
      sync();
    });
    winch_.add();
  }
  // From the loop, not here: `finished` may already be due (a request the protocol refuses),
  // and the owner has no pointer to this object until the constructor returns.
  start_ = Event::timer(loop, [this](int, short) { sync(); });
  start_.add(std::chrono::milliseconds(0));
}

AgentCommand::~AgentCommand() { restore_terminal(); }

void AgentCommand::close() {
  closed_ = true;
  watches_.clear();
  winch_.reset();
  start_.reset();
  restore_terminal();
}

bool AgentCommand::forward_signal(int sig) {
  if (!running()) return false;
  client_.forward_signal(sig);
  sync();
  return true;
}

void AgentCommand::request_shutdown(int status) {
  client_.request_shutdown(status);
  shutdown_ = true;
  if (!syncing_) sync();
}

void AgentCommand::ready(int fd, short what) {
  short revents = 0;
  if (what & EV_READ) revents |= POLLIN;
  if (what & EV_WRITE) revents |= POLLOUT;
  client_.on_ready(fd, revents);
  sync();
}

// Watches what the client asks for now. The loop uses poll(2), where adding and removing
// events is bookkeeping, not system calls, and regular files count as always ready. Called
// from a watch's own callback, it destroys that event: nothing of it is touched after.
void AgentCommand::sync() {
  watches_.clear();
  if (closed_) return;
  if (client_.finished() && !reported_) {
    reported_ = true;
    restore_terminal();
    syncing_ = true;
    finished_();
    syncing_ = false;
    if (closed_) return;
  }
  if (client_.finished() && !shutdown_) return;
  if (shutdown_ && client_.flushed()) return;  // Nothing more to say; the VM goes down.
  for (const auto& w : client_.watches()) {
    short events = EV_PERSIST;
    if (w.events & POLLIN) events |= EV_READ;
    if (w.events & POLLOUT) events |= EV_WRITE;
    watches_.push_back(Event::on_fd(loop_, w.fd, events, [this](int fd, short what) { ready(fd, what); }));
    watches_.back().add();
  }
}

void AgentCommand::restore_terminal() {
  if (!raw_terminal_) return;
  tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios_);
  raw_terminal_ = false;
}

}  // namespace moss
