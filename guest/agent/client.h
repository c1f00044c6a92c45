// The host side of the agent protocol (library moss_agent_client): reach the guest agent
// through the vsock worker's Unix socket, run one program, pump the user's stdin, stdout and
// stderr with back-pressure, forward signals and window sizes, and get the exit status.
//
// ExecClient does not own an event loop: it names the fds it wants watched (watches()) and is
// told when they are ready (on_ready()), so it fits the broker's libevent loop; poll_once() /
// run_exec() are a plain poll loop for callers without one (and for tests).
//
// The user's fds are borrowed and left as they are (blocking or not): a blocking pipe or tty
// gets at most PIPE_BUF bytes per readiness, so a write never blocks for long; a socket is
// written with MSG_DONTWAIT. The caller must ignore SIGPIPE (a user's stdout that went away is
// seen as EPIPE and passed on to the program as the end of its stdout).
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "guest/agent/protocol.h"

namespace moss::agent {

// Sends "CONNECT <port>\n" on `fd`, a connected stream socket to the vsock worker, and waits
// up to `timeout` for "OK <n>\n"; after it the socket is a byte stream to the guest's listener.
// Reads nothing past the newline. Errors are sentences: the worker closed the connection
// (nothing listens on that port in the guest yet), an answer other than OK, the time-out.
Result<void> vsock_handshake(int fd, uint32_t port, std::chrono::milliseconds timeout);

// The two halves of vsock_handshake(), for when one process sends CONNECT and another reads
// the answer (moss exec: the VM's broker connects and sends, the client reads). The line sent:
std::string connect_line(uint32_t port);
// Waits up to `timeout` for "OK <n>\n" on `fd`. *not_listening (may be null) is set when the
// worker closed the connection: nothing listens on `port` in the guest (yet).
Result<void> vsock_handshake_answer(int fd, uint32_t port, std::chrono::milliseconds timeout, bool* not_listening);

// Connects to the vsock worker's socket `uds_path` and does the handshake, trying again every
// 20 ms while the guest is not listening yet (the connection refused or closed at CONNECT)
// until `timeout` has passed. Blocks: call it where blocking is fine (a thread, or once the
// guest is known to be up).
Result<UniqueFd> connect_agent(const std::string& uds_path, std::chrono::milliseconds timeout,
                               uint32_t port = kAgentPort);

struct ExecOutcome {
  ExitInfo exit;
  // The agent's sentence when the program could not be started (exit 127: not found, 126:
  // not executable, 125: the agent could not set it up); empty otherwise.
  std::string message;
  int shell_status() const { return exit.shell_status(); }  // 128 + N for signal N.
};

class ExecClient {
 public:
  // The user's side, borrowed: `in` may be -1 (no input: the program sees EOF at once). In pty
  // mode `err` is unused (a terminal has one output).
  struct UserFds {
    int in = 0;
    int out = 1;
    int err = 2;
  };

  // Queues HELLO and EXEC at once. `sock`: connected to the agent (after vsock_handshake).
  // A request the protocol refuses (check_frame) fails the session at once: see outcome().
  ExecClient(UniqueFd sock, const ExecRequest& req, UserFds fds);

  struct Watch {
    int fd;
    short events;  // POLLIN and/or POLLOUT
  };
  // The fds to watch now, at most four (socket, stdin, stdout, stderr). Changes after every
  // call below: re-read it after each one.
  std::vector<Watch> watches() const;
  // `fd` is ready: `revents` as poll() reports it (POLLIN, POLLOUT, POLLHUP, POLLERR).
  void on_ready(int fd, short revents);

  // Forwards signal `signo` to the program (pipes: its process group; pty: the terminal's
  // foreground process group). Ignored once the program has ended.
  void forward_signal(int signo);
  // Pty mode: the user's terminal is now rows x cols. Ignored in pipes mode.
  void resize(uint16_t rows, uint16_t cols);

  // The program's pid in the guest, once the agent has started it (STARTED), else 0.
  uint32_t guest_pid() const { return guest_pid_; }
  // The outcome is known: the exit status arrived and every byte of output was written to the
  // user's fds (or the reader went away), or the session failed.
  bool finished() const;
  // After finished(): the exit status, or why the session failed (a sentence).
  const Result<ExecOutcome>& outcome() const { return outcome_; }

  // Asks moss-init to end the VM with `status` (0-255) through the exit port. Queued; keep
  // watching until flushed() (then the VM goes down; the agent does not answer).
  void request_shutdown(int status);
  // Nothing is waiting to be sent to the agent.
  bool flushed() const { return sock_out_pos_ == sock_out_.size(); }

  // A plain poll() over watches() for up to `timeout_ms` (-1: no limit), then on_ready().
  Result<void> poll_once(int timeout_ms);

 private:
  static constexpr size_t kReadChunk = kMaxDataPayload;
  static constexpr size_t kSockHighWater = 256u << 10;

  void fail(std::string message);
  void on_socket_readable();
  void on_frame(const Frame& f);
  void read_stdin();
  void write_output(int s);
  void flush_socket();
  void return_credit(int s, bool force);
  bool running() const { return !failed_ && !exited_; }

  UniqueFd sock_;
  UserFds user_;
  bool pty_;
  bool out_blocking_[2] = {true, true};  // Write at most PIPE_BUF per readiness.
  bool out_is_socket_[2] = {false, false};
  Decoder dec_{Direction::kToHost};
  std::string sock_out_;
  size_t sock_out_pos_ = 0;

  bool hello_ = false;
  bool exited_ = false;
  bool failed_ = false;
  bool sock_eof_ = false;
  uint32_t guest_pid_ = 0;
  bool stdin_done_ = false;
  uint64_t stdin_credit_ = kInitialWindow;
  std::string outbuf_[2];
  size_t outpos_[2] = {0, 0};
  bool out_closed_[2] = {false, false};
  uint64_t out_allowed_[2] = {kInitialWindow, kInitialWindow};
  uint32_t out_unreported_[2] = {0, 0};
  ExecOutcome result_;
  Result<ExecOutcome> outcome_{Error{"the session has not ended yet"}};
};

// On a fresh connection to the agent: HELLO, then SHUTDOWN{status} (0-255), which makes
// moss-init end the VM with that status (e.g. to stop a VM with no program running). Waits up
// to `timeout` for the agent's HELLO or the end of the connection (the VM may go down before
// the answer leaves it), so a refusal is reported.
Result<void> send_shutdown(int sock, int status, std::chrono::milliseconds timeout);

// How many bytes of host entropy renew_generation() sends: 512 bits from getrandom().
inline constexpr size_t kGenerationEntropyBytes = 64;

// On `fd`, a stream connected to the guest agent (after vsock_handshake) on which nothing was
// sent yet: HELLO (version 2), GENERATION{generation (>= 1), realtime_ns (0: leave the guest's
// clock), fresh entropy from getrandom()}, and waits up to `timeout` for GENERATION_ACK. The fd
// is borrowed and left open. Errors are one sentence: an agent too old for generations, its
// refusal, the time-out, a closed connection.
Result<void> renew_generation(int fd, uint64_t generation, int64_t realtime_ns, std::chrono::milliseconds timeout);

// Runs a whole session with poll_once() and returns its outcome. Signals and window sizes
// cannot be injected: use ExecClient for that.
Result<ExecOutcome> run_exec(UniqueFd sock, const ExecRequest& req, ExecClient::UserFds fds);

}  // namespace moss::agent
