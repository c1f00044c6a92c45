// moss-vsock's program logic, a library function so that `moss device vsock` can run it too.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <vector>

#include "base/log.h"
#include "devices/vsock/cli.h"
#include "base/unix_socket.h"
#include "devices/vsock/worker.h"

namespace moss::vsock {
namespace {

int fail(int status, const std::string& message) {
  std::fprintf(stderr, "moss-vsock: %s\n", message.c_str());
  return status;
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
    struct stat st;
    if (::fstat(o.fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
      return fail(1, "--fd " + std::to_string(o.fd) + " is not an open socket");
    }
    sock.reset(o.fd);
    ::fcntl(o.fd, F_SETFD, FD_CLOEXEC);
  }
  auto host_listener = listen_unix(o.uds_path, 64, /*nonblocking=*/true);
  if (!host_listener.ok()) return fail(1, host_listener.error().message);
  SocketPathGuard host_guard(o.uds_path);
  // TODO(security): sandbox here (namespaces, seccomp). The worker still needs to connect to
  // "<uds-path>_<port>" for guest connections, so its mount namespace must keep that directory.

  DeviceOptions d;
  d.guest_cid = o.guest_cid;
  d.uds_path = o.uds_path;
  d.limits.max_connections = o.max_connections;
  auto worker = Worker::create(d);
  if (!worker.ok()) return fail(1, worker.error().message);
  if (auto r = (*worker)->stop_on_signals(); !r.ok()) return fail(1, r.error().message);
  if (auto r = (*worker)->accept_hosts(host_listener->get()); !r.ok()) return fail(1, r.error().message);

  if (!o.socket_path.empty()) {
    auto listener = listen_unix(o.socket_path, 8, /*nonblocking=*/true);
    if (!listener.ok()) return fail(1, listener.error().message);
    SocketPathGuard guard(o.socket_path);
    auto r = (*worker)->serve_listener(listener->get());
    if (!r.ok()) return fail(1, r.error().message);
    return 0;
  }
  auto r = (*worker)->serve_connection(std::move(sock));
  if (!r.ok()) return fail(1, "dropped the frontend: " + r.error().message);
  return 0;
}

}  // namespace moss::vsock
