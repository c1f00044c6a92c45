// The agent's connections: a listening socket (vsock in the guest), the Sessions it accepted,
// and the routing of reaped children to them. moss-init runs it in PID 1's poll loop beside its
// own work; serve_connection() runs the same code over one given socket (host tests).
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "guest/agent/session.h"

namespace moss::agent {

// Makes a new listening socket when the old one failed (moss-init: listen_vsock(kAgentPort)).
using Relisten = Result<UniqueFd> (*)();

class Server {
 public:
  static constexpr size_t kMaxSessions = 64;  // Beyond this a new connection is closed at once.
  static constexpr int kFirstRelistenDelayMs = 20;
  static constexpr int kMaxRelistenDelayMs = 5000;

  // `listen_fd`: a listening stream socket (made non-blocking here), or an empty UniqueFd.
  // `on_generation`: what each session does with a GENERATION (session.h). `relisten`: if the
  // listener reports an error (POLLERR/POLLHUP, or accept() fails for a reason that is not
  // about one connection), it is closed and `relisten` called to make a new one, after
  // kFirstRelistenDelayMs, then with the delay doubling up to kMaxRelistenDelayMs while it
  // fails: a vsock transport reset or a broken listener never stops the agent for good, and
  // never makes it spin. Without `relisten` a broken listener is only closed.
  explicit Server(UniqueFd listen_fd, GenerationHandler on_generation = nullptr, Relisten relisten = nullptr);

  void add_connection(UniqueFd conn);

  // Appends the pollfds to wait on; handle() takes them back (with revents) in the same order.
  void fill(std::vector<pollfd>* fds);
  void handle(const pollfd* fds, size_t n);
  // The poll time-out the caller should use: -1, or the milliseconds until the next attempt
  // to listen again. handle() (with n == 0 if poll timed out) makes the attempt when due.
  int timeout_ms() const;
  bool listening() const { return listen_.valid(); }
  // Times the listener was re-created, for tests and the console.
  uint64_t relistens() const { return relistens_; }

  // Routes a reaped child's wait status to its session. False: no session's program.
  bool child_exited(pid_t pid, int status);

  // A session received SHUTDOWN{status}.
  bool shutdown_requested(int* status) const {
    if (shutdown_status_ < 0) return false;
    *status = shutdown_status_;
    return true;
  }
  size_t session_count() const { return sessions_.size(); }

 private:
  void accept_all();
  void listener_failed();
  void try_relisten();

  UniqueFd listen_;
  GenerationHandler on_generation_;
  Relisten relisten_;
  int64_t relisten_at_ms_ = -1;  // CLOCK_MONOTONIC; -1: none pending.
  int relisten_delay_ms_ = kFirstRelistenDelayMs;
  uint64_t relistens_ = 0;
  std::vector<std::unique_ptr<Session>> sessions_;
  std::vector<size_t> counts_;  // Entries each session added in the last fill().
  int shutdown_status_ = -1;
};

// SIGCHLD as a readable fd (a self-pipe written by the handler), so a poll loop learns of
// children to reap. One per process: a signal handler reaches only static state.
class ChildSignals {
 public:
  // Installs the handler (SA_RESTART | SA_NOCLDSTOP).
  Result<void> install();
  int fd() const { return read_.get(); }
  void drain();

 private:
  UniqueFd read_, write_;
};

// Reaps every child that has ended without blocking (waitpid(-1, WNOHANG)), passing each to
// `server`; a child no session owns (an orphan re-parented to PID 1, or a program whose
// connection is gone) is only reaped. The status of `also` (moss-init's console program) goes
// to *also_status, and *also_reaped is set.
void reap_children(Server* server, pid_t also = -1, int* also_status = nullptr, bool* also_reaped = nullptr);

// Opens the agent's listening socket: AF_VSOCK, VMADDR_CID_ANY, `port`, O_CLOEXEC.
Result<UniqueFd> listen_vsock(uint32_t port);

// Connects a vsock stream socket to `cid`:`port` (blocking: the kernel's connect time-out
// bounds it).
Result<UniqueFd> dial_vsock(uint32_t cid, uint32_t port);

// Runs `server` as moss-init would, reaping children (waitpid(-1)), until a SHUTDOWN arrives or,
// if `until_idle`, no session is left. Returns the SHUTDOWN status, or -1. Ignores SIGPIPE and
// installs the SIGCHLD handler: meant for a process of its own (a forked test helper).
int run_server(Server* server, bool until_idle);

// run_server() over one connection: serves it to its end.
int serve_connection(UniqueFd conn, GenerationHandler on_generation = nullptr);

}  // namespace moss::agent
