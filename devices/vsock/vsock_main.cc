// moss-vsock's program logic, a library function so that `moss device vsock` can run it too.
#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "base/log.h"
#include "base/unix_socket.h"
#include "devices/vsock/cli.h"
#include "devices/vsock/host_connector.h"
#include "devices/vsock/worker.h"
#include "devices/worker/main.h"

namespace moss::vsock {
namespace {

// --uds-path as the jailed worker must use it: its directory resolved (absolute, no symlinks,
// no "." or ".."), since the jail's working directory is / and it keeps only that directory.
Result<std::string> jailed_uds_path(const std::string& uds_path, size_t max_bytes) {
  size_t slash = uds_path.rfind('/');
  std::string dir = parent_dir(uds_path);
  std::string name = slash == std::string::npos ? uds_path : uds_path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") return make_error("--uds-path must name a socket, not '" + uds_path + "'");
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved) == nullptr) {
    return sys_error("resolve the directory of --uds-path", uds_path);
  }
  std::string out = std::string(resolved) + (std::strcmp(resolved, "/") == 0 ? "" : "/") + name;
  if (out.size() > max_bytes) {
    return make_error("--uds-path " + uds_path + " is " + out + " once resolved, longer than " + std::to_string(max_bytes) +
                      " bytes; give a shorter path");
  }
  return out;
}

// The --uds-fd listener: a listening Unix stream socket, made non-blocking and close-on-exec.
Result<UniqueFd> adopt_listener(int fd) {
  MOSS_TRY(UniqueFd l, vhost_user::adopt_socket(fd, "--uds-fd"));
  int accepting = 0, domain = 0, type = 0;
  socklen_t len = sizeof accepting;
  bool ok = ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0 && accepting;
  len = sizeof domain;
  ok = ok && ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
  len = sizeof type;
  ok = ok && ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
  if (!ok) return make_error("--uds-fd " + std::to_string(fd) + " is not a listening Unix stream socket");
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return sys_error("make --uds-fd non-blocking");
  }
  return l;
}

Result<runtime::Prepared> prepare(const CliOptions& o, bool jailed) {
  // Everything that needs the host's tree comes before the sandbox: the host listener (a stale
  // socket is replaced by path), and the --uds-path directory it keeps (sandbox.h) if it has
  // to connect there itself (no --connect-fd).
  std::string uds_path = o.uds_path;
  if (jailed && !uds_path.empty()) {
    MOSS_TRY(uds_path, jailed_uds_path(o.uds_path, kMaxUdsPath));
  }
  std::shared_ptr<UniqueFd> host_listener;
  if (o.uds_fd >= 0) {
    MOSS_TRY(UniqueFd l, adopt_listener(o.uds_fd));
    host_listener = std::make_shared<UniqueFd>(std::move(l));
  } else {
    MOSS_TRY(UniqueFd l, listen_unix(uds_path, 64, /*nonblocking=*/true));
    host_listener = std::make_shared<UniqueFd>(std::move(l));
  }
  // Jailed, the worker cannot remove its sockets (vsock.policy has no unlink): whoever started
  // it does (the broker, which chose the paths). A --uds-fd listener is its starter's anyway.
  std::shared_ptr<SocketPathGuard> host_guard;
  if (!jailed && o.uds_fd < 0) host_guard = std::make_shared<SocketPathGuard>(uds_path);
  std::shared_ptr<StarterConnector> starter;
  std::shared_ptr<UniqueFd> connector;
  DeviceOptions d;
  d.guest_cid = o.guest_cid;
  d.uds_path = uds_path;
  d.limits.max_connections = o.max_connections;
  if (o.connect_fd >= 0) {
    MOSS_TRY(UniqueFd c, vhost_user::adopt_socket(o.connect_fd, "--connect-fd"));
    connector = std::make_shared<UniqueFd>(std::move(c));
    starter = std::make_shared<StarterConnector>(connector->get());
    d.connect_host = [starter, connector](uint32_t port) { return starter->connect(port); };
  }
  runtime::Prepared p;
  p.spec = worker_spec(std::move(d));
  if (o.connect_fd < 0) p.keep_dirs.push_back(parent_dir(uds_path));
  p.start = [host_listener, host_guard](runtime::Runtime& rt) -> Result<std::shared_ptr<void>> {
    MOSS_TRY(std::unique_ptr<HostListener> h, HostListener::create(rt, host_listener->get()));
    struct Held {
      std::shared_ptr<UniqueFd> listener;
      std::shared_ptr<SocketPathGuard> guard;
      std::unique_ptr<HostListener> hosts;
    };
    return std::shared_ptr<void>(std::make_shared<Held>(Held{host_listener, host_guard, std::move(h)}));
  };
  return p;
}

}  // namespace

int vsock_main(int argc, char** argv) {
  return runtime::worker_main(argc, argv, {"moss-vsock", sandbox::Role("vsock"), usage_text, capabilities_json}, parse_cli,
                              prepare);
}

}  // namespace moss::vsock
