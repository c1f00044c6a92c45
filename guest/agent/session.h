// One agent connection: the protocol's guest side for one program (see protocol.h).
//
// The session owns the socket and the program's stdio fds; it does not own the event loop
// (Server, or a test, polls the fds it names) and it does not reap: whoever reaps the
// program's pid calls child_exited(). It never blocks: every fd is non-blocking, and it reads
// from a source only while the destination has room (the peer's credit, our bounded buffers).
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/fd.h"
#include "guest/agent/protocol.h"

namespace moss::agent {

// Applies a GENERATION frame (its generation, realtime_ns and entropy in data) to the system
// the agent runs in: moss-init's is guest/agent/generation.h's apply_generation(). Returns why
// it could not (the host gets ERROR{kResource} with the sentence).
using GenerationHandler = Result<void> (*)(const Frame& generation);

class Session {
 public:
  // A connected stream socket, made non-blocking here. Without `on_generation` a GENERATION is
  // answered ERROR{kResource}.
  explicit Session(UniqueFd sock, GenerationHandler on_generation = nullptr);
  ~Session();                 // Kills the program's process group if it still runs.
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Appends the pollfds this session waits on now and returns how many. The entries must go
  // back, with their revents, to handle() before the next fill().
  size_t fill(std::vector<pollfd>* fds);
  void handle(const pollfd* fds, size_t n);

  // The program's pid while it has not been reported reaped, else -1.
  pid_t pid() const { return reaped_ ? -1 : pid_; }
  // The program (pid()) ended with wait status `status`.
  void child_exited(int status);

  // The connection is over: the Session can be destroyed.
  bool done() const { return phase_ == Phase::kDone; }
  // SHUTDOWN{status} arrived on this connection.
  bool shutdown_requested(int* status) const {
    if (shutdown_status_ < 0) return false;
    *status = shutdown_status_;
    return true;
  }

 private:
  enum class Phase { kHello, kExec, kRunning, kExited, kClosing, kDone };
  static constexpr size_t kReadChunk = kMaxDataPayload;
  static constexpr size_t kOutHighWater = 256u << 10;  // Stop reading the program beyond this.

  void on_socket_readable();
  void on_frame(const Frame& f);
  void start(const ExecRequest& req);
  void renew_generation(const Frame& f);
  void protocol_error(const char* what);
  void send_error(ErrorCode code, const std::string& message);
  void progress();
  bool read_output(int stream);  // 0 stdout, 1 stderr; false when it would block.
  void write_stdin();
  void flush_socket();
  void kill_program();
  void finish();  // Closes everything; done().
  int stdin_fd() const;

  UniqueFd sock_;
  Decoder dec_{Direction::kToAgent};
  Phase phase_ = Phase::kHello;
  uint16_t version_ = 0;  // Agreed at HELLO.
  GenerationHandler on_generation_;
  bool pty_ = false;
  std::string out_;  // Encoded frames for the host.
  size_t out_pos_ = 0;

  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
  UniqueFd in_, outs_[2];  // Pipes: stdin, {stdout, stderr}. Pty: outs_[0] is the master.
  // Pty: the master said EIO (no process has the terminal open) before the program was
  // reaped. It stays open until then: closing it would hang up the terminal and SIGHUP a
  // program that closed its stdio on the way out but has not exited yet.
  bool out_eof_ = false;
  std::string stdin_;  // Bytes from the host not yet written to the program.
  size_t stdin_pos_ = 0;
  bool stdin_eof_ = false;     // STDIN_EOF received: close stdin (pty: type VEOF) once written.
  bool stdin_closed_ = false;  // The program's stdin is gone; STDIN frames are dropped.
  uint64_t stdin_allowed_ = kInitialWindow;  // Bytes the host may still send.
  uint32_t stdin_unreported_ = 0;            // Written to the program, credit not yet sent.
  uint64_t out_credit_[2] = {kInitialWindow, kInitialWindow};
  int shutdown_status_ = -1;
};

}  // namespace moss::agent
