// moss-vsock's program logic, a library function so that `moss device vsock` can run it too.
#include <limits.h>
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

  UniqueFd sock;
  if (o.fd >= 0) {
    auto adopted = vhost_user::adopt_socket(o.fd, "--fd");
    if (!adopted.ok()) return fail(1, adopted.error().message);
    sock = std::move(*adopted);
  }
  // Everything that needs the host's tree comes before the sandbox: the listeners (a stale
  // socket is replaced by path), and the --uds-path directory it keeps (sandbox.h).
  const bool jailed = sandbox::launched_jailed();
  std::string uds_path = o.uds_path;
  if (jailed) {
    auto resolved = jailed_uds_path(o.uds_path, kMaxUdsPath);
    if (!resolved.ok()) return fail(1, resolved.error().message);
    uds_path = *resolved;
  }
  auto host_listener = listen_unix(uds_path, 64, /*nonblocking=*/true);
  if (!host_listener.ok()) return fail(1, host_listener.error().message);
  UniqueFd listener;
  if (!o.socket_path.empty()) {
    auto l = listen_unix(o.socket_path, 8, /*nonblocking=*/true);
    if (!l.ok()) return fail(1, l.error().message);
    listener = std::move(*l);
  }
  // Jailed, the worker cannot remove its sockets (vsock.policy has no unlink): whoever started
  // it does (the broker, which chose the paths).
  std::optional<SocketPathGuard> host_guard, guard;
  if (!jailed) {
    host_guard.emplace(uds_path);
    if (listener.valid()) guard.emplace(o.socket_path);
  }
  sandbox::enter(sandbox::Role::kVsock, {parent_dir(uds_path)});

  DeviceOptions d;
  d.guest_cid = o.guest_cid;
  d.uds_path = uds_path;
  d.limits.max_connections = o.max_connections;
  auto worker = Worker::create(d);
  if (!worker.ok()) return fail(1, worker.error().message);
  if (auto r = (*worker)->stop_on_signals(); !r.ok()) return fail(1, r.error().message);
  if (auto r = (*worker)->accept_hosts(host_listener->get()); !r.ok()) return fail(1, r.error().message);

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
