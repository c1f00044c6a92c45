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
#include "policies/sandbox.h"

namespace moss::vsock {
namespace {

int fail(int status, const std::string& message) {
  std::fprintf(stderr, "moss-vsock: %s\n", message.c_str());
  return status;
}

// --uds-path as the jailed worker must use it: its directory resolved (absolute, no symlinks,
// no "." or ".."), since the jail's working directory is / and it keeps only that directory.
Result<std::string> jailed_uds_path(const std::string& uds_path, size_t max_bytes) {
  size_t slash = uds_path.rfind('/');
  std::string dir = parent_dir(uds_path);
  std::string name = slash == std::string::npos ? uds_path : uds_path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") return make_error("--uds-path must name a socket, not '" + uds_path + "'");
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved) == nullptr) {
    return make_error("cannot resolve the directory of --uds-path " + uds_path + ": " + std::strerror(errno), errno);
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
    return make_error(std::string("cannot make --uds-fd non-blocking: ") + std::strerror(errno), errno);
  }
  return l;
}

}  // namespace

int vsock_main(int argc, char** argv) {
  log_init("moss-vsock");
  std::vector<const char*> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  auto parsed = parse_cli(args);
  if (!parsed.ok()) return fail(2, parsed.error().message + " (see moss-vsock --help)");
  const CliOptions& o = *parsed;
  if (o.mode == CliOptions::Mode::kHelp) {
    std::fputs(usage_text().c_str(), stdout);
    return 0;
  }
  if (o.mode == CliOptions::Mode::kPrintCapabilities) {
    std::fputs(capabilities_json().c_str(), stdout);
    return 0;
  }
  // A peer that goes away mid-write must be an error value, not a signal.
  ::signal(SIGPIPE, SIG_IGN);
  // SIGTERM and SIGINT wait until the loop handles them (stop_on_signals, below): the listening
  // socket exists before that, and a starter that sees it may signal at once.
  sigset_t ending;
  sigemptyset(&ending);
  sigaddset(&ending, SIGTERM);
  sigaddset(&ending, SIGINT);
  ::sigprocmask(SIG_BLOCK, &ending, nullptr);

  UniqueFd sock;
  if (o.fd >= 0) {
    auto adopted = vhost_user::adopt_socket(o.fd, "--fd");
    if (!adopted.ok()) return fail(1, adopted.error().message);
    sock = std::move(*adopted);
  }
  // Everything that needs the host's tree comes before the sandbox: the listeners (a stale
  // socket is replaced by path), and the --uds-path directory it keeps (sandbox.h) if it has
  // to connect there itself (no --connect-fd).
  const bool jailed = sandbox::launched_jailed();
  const bool needs_dir = o.connect_fd < 0;
  std::string uds_path = o.uds_path;
  if (jailed && !uds_path.empty()) {
    auto resolved = jailed_uds_path(o.uds_path, kMaxUdsPath);
    if (!resolved.ok()) return fail(1, resolved.error().message);
    uds_path = *resolved;
  }
  UniqueFd host_listener;
  if (o.uds_fd >= 0) {
    auto adopted = adopt_listener(o.uds_fd);
    if (!adopted.ok()) return fail(1, adopted.error().message);
    host_listener = std::move(*adopted);
  } else {
    auto l = listen_unix(uds_path, 64, /*nonblocking=*/true);
    if (!l.ok()) return fail(1, l.error().message);
    host_listener = std::move(*l);
  }
  UniqueFd connector;
  if (o.connect_fd >= 0) {
    auto adopted = vhost_user::adopt_socket(o.connect_fd, "--connect-fd");
    if (!adopted.ok()) return fail(1, adopted.error().message);
    connector = std::move(*adopted);
  }
  UniqueFd listener;
  if (!o.socket_path.empty()) {
    auto l = listen_unix(o.socket_path, 8, /*nonblocking=*/true);
    if (!l.ok()) return fail(1, l.error().message);
    listener = std::move(*l);
  }
  // Jailed, the worker cannot remove its sockets (vsock.policy has no unlink): whoever started
  // it does (the broker, which chose the paths). A --uds-fd listener is its starter's anyway.
  std::optional<SocketPathGuard> host_guard, guard;
  if (!jailed) {
    if (o.uds_fd < 0) host_guard.emplace(uds_path);
    if (listener.valid()) guard.emplace(o.socket_path);
  }
  std::vector<std::string> keep;
  if (needs_dir) keep.push_back(parent_dir(uds_path));
  sandbox::enter(sandbox::Role::kVsock, keep);

  DeviceOptions d;
  d.guest_cid = o.guest_cid;
  d.uds_path = uds_path;
  d.limits.max_connections = o.max_connections;
  std::optional<StarterConnector> starter;
  if (connector.valid()) {
    starter.emplace(connector.get());
    d.connect_host = [&starter](uint32_t port) { return starter->connect(port); };
  }
  auto worker = Worker::create(d);
  if (!worker.ok()) return fail(1, worker.error().message);
  if (auto r = (*worker)->stop_on_signals(); !r.ok()) return fail(1, r.error().message);
  ::sigprocmask(SIG_UNBLOCK, &ending, nullptr);
  if (auto r = (*worker)->accept_hosts(host_listener.get()); !r.ok()) return fail(1, r.error().message);

  if (listener.valid()) {
    auto r = (*worker)->serve_listener(listener.get());
    if (!r.ok()) return fail(1, r.error().message);
    return 0;
  }
  auto r = (*worker)->serve_connection(std::move(sock));
  if (!r.ok()) return fail(1, "dropped the frontend: " + r.error().message);
  return 0;
}

}  // namespace moss::vsock
