// moss-vsock under test, as its own process (a WorkerProcess, which says how it is started and
// stopped), with the host side's socket (--uds-path) in its directory; and a host program's
// side of hybrid vsock.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "tests/harness/worker_process.h"

namespace moss::harness {

// With the shared worker options (WorkerOptions: pass_fd as the broker gives it, control,
// extra_args).
struct VsockProcessOptions : WorkerOptions {
  uint64_t guest_cid = 3;
};

class VsockProcess : public WorkerProcess {
 public:
  // Starts moss-vsock and waits until its sockets exist. Error if the binary is missing, or
  // the process exits or creates no socket within `timeout`; the message has its log.
  static Result<std::unique_ptr<VsockProcess>> start(const VsockProcessOptions& options = {},
                                                     std::chrono::milliseconds timeout = std::chrono::seconds(10));

  const std::string& uds_path() const { return uds_; }  // Host programs connect here.

  // $MOSS_VSOCK, else $MOSS_BUILD_DIR/moss-vsock, else beside this binary.
  static std::string binary_path() { return WorkerProcess::binary_path("moss-vsock"); }
  static std::optional<std::string> unavailable() { return WorkerProcess::unavailable(binary_path()); }

 private:
  explicit VsockProcess(TempDir dir);

  std::string uds_;
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
