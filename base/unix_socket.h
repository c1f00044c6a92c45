// Listening Unix sockets at a path, for every worker: the vhost-user socket (--socket-path of
// moss-blk and moss-vsock) and the socket host programs connect to (moss-vsock --uds-path).
#pragma once

#include <sys/types.h>

#include <string>

#include "base/fd.h"
#include "base/result.h"

namespace moss {

// Binds a listening stream socket at `path` (close-on-exec; non-blocking if asked). An
// existing socket nobody listens on (left by a worker that died) is replaced; a live one, or
// any other file, is an Error.
Result<UniqueFd> listen_unix(const std::string& path, int backlog, bool nonblocking);

// The directory part of a socket path: "/a/b/c" -> "/a/b", "/c" -> "/", "c" -> ".".
std::string parent_dir(const std::string& path);

// Unlinks the socket at `path` on destruction if it is still the one we bound (same inode),
// so a worker never removes a socket another process put there since.
class SocketPathGuard {
 public:
  // Call right after listen_unix(path) succeeded.
  explicit SocketPathGuard(std::string path);
  ~SocketPathGuard();
  SocketPathGuard(const SocketPathGuard&) = delete;
  SocketPathGuard& operator=(const SocketPathGuard&) = delete;

 private:
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace moss
