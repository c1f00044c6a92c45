#include "base/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/syscall.h"

namespace moss {

Result<UniqueFd> listen_unix(const std::string& path, int backlog, bool nonblocking) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return make_error("the socket path '" + path + "' must be 1 to " + std::to_string(sizeof addr.sun_path - 1) +
                      " bytes long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(path + " exists and is not a socket; remove it or choose another path");
    MOSS_TRY(int probe_fd, MOSS_SYS(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
    UniqueFd probe(probe_fd);
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return make_error("another process is already listening on " + path);
    }
    if (errno != ECONNREFUSED) {
      return sys_error("tell whether", path + " is in use");
    }
    // Nobody listens: a socket left by a worker that died. Replace it.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return sys_error("remove", "the stale socket " + path);
    }
  }
  MOSS_TRY(int raw, MOSS_SYS(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0)));
  UniqueFd fd(raw);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return sys_error("create", "the socket " + path);
  }
  if (::listen(fd.get(), backlog) != 0) return sys_error("listen on", path);
  return fd;
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

SocketPathGuard::SocketPathGuard(std::string path) : path_(std::move(path)) {
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
}

SocketPathGuard::~SocketPathGuard() {
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_ && S_ISSOCK(st.st_mode)) {
    ::unlink(path_.c_str());
  }
}

}  // namespace moss
