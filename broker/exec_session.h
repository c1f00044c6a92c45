// One program run in the guest through its agent, with this process's stdin, stdout and
// stderr, driven by the broker's libevent loop: what `moss run -- CMD` (broker/command_session.h)
// and `moss exec NAME -- CMD` (broker/exec.h) share. It builds the request (-t: a pty of the
// terminal's size, $TERM, the terminal in raw mode while the program runs, window changes
// passed on), watches the fds agent::ExecClient asks for, forwards signals, and says when the
// program's outcome is known.
#pragma once

#include <termios.h>

#include <functional>
#include <string>
#include <vector>

#include "base/event.h"
#include "base/fd.h"
#include "guest/agent/client.h"

namespace moss {

class AgentCommand {
 public:
  struct Options {
    std::vector<std::string> command;
    std::vector<std::string> env;  // KEY=VALUE
    std::string workdir;           // Empty: "/".
    bool tty = false;
  };

  // Starts the program on `agent` (a stream to the guest agent, nothing sent on it yet).
  // `finished` runs (from the loop, once) when the outcome is known: it may call
  // request_shutdown() but must not destroy this object.
  AgentCommand(event_base* loop, UniqueFd agent, const Options& options, std::function<void()> finished);
  ~AgentCommand();  // Leaves the terminal as it found it.
  AgentCommand(const AgentCommand&) = delete;
  AgentCommand& operator=(const AgentCommand&) = delete;

  // Passes `sig` to the program while it runs (true); false once it has ended.
  bool forward_signal(int sig);
  bool running() const { return !client_.finished(); }
  const agent::ExecClient& client() const { return client_; }
  // After the outcome: asks moss-init to power the VM off with `status`; the socket is watched
  // until the request has left.
  void request_shutdown(int status);
  // Stops watching anything and restores the terminal.
  void close();

 private:
  static agent::ExecRequest request(const Options& o, bool* raw);
  void ready(int fd, short what);
  void sync();
  void restore_terminal();

  event_base* loop_;
  bool raw_wanted_ = false;
  agent::ExecClient client_;
  std::function<void()> finished_;
  std::vector<Event> watches_;  // One per ExecClient::watches() entry, remade after each event.
  Event winch_, start_;
  termios saved_termios_{};
  bool raw_terminal_ = false;
  bool reported_ = false, shutdown_ = false, closed_ = false, syncing_ = false;
};

}  // namespace moss
