// moss-vsock under test, as its own process: a fresh directory with the vhost-user socket, the
// host side's socket (--uds-path) and the process's log; stopped by its pid (SIGTERM, then
// SIGKILL) when the object goes, and killed with the test process if that crashes
// (PR_SET_PDEATHSIG), as BackendProcess does for block backends.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "tests/harness/backend_process.h"

namespace moss::harness {

struct VsockProcessOptions {
  uint64_t guest_cid = 3;
  bool pass_fd = false;  // Serve one connected socket passed as --fd 3 (the broker's way).
  std::vector<std::string> extra_args;
};

class VsockProcess {
 public:
  // Starts moss-vsock and waits until its sockets exist. Error if the binary is missing, or
  // the process exits or creates no socket within `timeout`; the message has its log.
  static Result<std::unique_ptr<VsockProcess>> start(const VsockProcessOptions& options = {},
                                                     std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~VsockProcess();
  VsockProcess(const VsockProcess&) = delete;
  VsockProcess& operator=(const VsockProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_.path(); }
  const std::string& socket_path() const { return socket_; }  // vhost-user (unless pass_fd).
  const std::string& uds_path() const { return uds_; }        // Host programs connect here.
  // With pass_fd: our end of the connected vhost-user socket (Guest::adopt it).
  UniqueFd take_connection() { return std::move(connection_); }

  bool alive();
  std::optional<int> exit_status() const { return status_; }
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(3));  // Wait status.
  std::string log() const;
  std::string describe() const;

  // $MOSS_VSOCK, else $MOSS_BUILD_DIR/moss-vsock, else beside this binary.
  static std::string binary_path();
  static std::optional<std::string> unavailable();

 private:
  VsockProcess(TempDir dir);
  bool reap(bool block);

  TempDir dir_;
  std::string socket_, uds_, log_path_;
  UniqueFd connection_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// A host program's side of hybrid vsock: connect to the worker's socket and ask for a guest
// port ("CONNECT <port>\n"). Returns the connected socket (blocking, with `timeout` as its
// receive and send time-outs); the "OK <port>\n" line is for the caller to read.
Result<UniqueFd> host_connect(const std::string& uds_path, uint32_t guest_port,
                              std::chrono::milliseconds timeout = std::chrono::seconds(5));
// Reads one '\n'-terminated line (at most 64 bytes, without the newline); Error on EOF first.
Result<std::string> read_line(int fd);
// A listening socket for guest connections to host port `port` ("<uds_path>_<port>").
Result<UniqueFd> host_listen(const std::string& uds_path, uint32_t port);
// Accepts one connection within `timeout` (blocking socket with time-outs).
Result<UniqueFd> host_accept(int listener, std::chrono::milliseconds timeout = std::chrono::seconds(5));
// Reads exactly n bytes, or fewer if EOF or the time-out comes first.
std::vector<uint8_t> read_exactly(int fd, size_t n);
// True if the peer closed: a read returns 0 within `timeout`.
bool reads_eof(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(3));
// Reads and discards whatever is pending; true if EOF follows within `timeout`.
bool drains_to_eof(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(3));

}  // namespace moss::harness
