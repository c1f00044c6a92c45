#include "devices/worker/main.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>

#include <cstdio>
#include <optional>

#include "base/log.h"
#include "base/unix_socket.h"

namespace moss::runtime {
namespace {

int fail(const Program& p, int status, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", p.name, message.c_str());
  return status;
}

Result<UniqueFd> adopt_control(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) {
    return make_error("--control-fd " + std::to_string(fd) + " is not an open SOCK_SEQPACKET socket");
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return UniqueFd(fd);
}

}  // namespace

int run_worker(const Program& p, const Result<const vhost_user::BackendArgs*>& parsed, const PrepareFn& prepare) {
  log_init(p.name);
  if (!parsed.ok()) return fail(p, 2, parsed.error().message + " (see " + p.name + " --help)");
  const vhost_user::BackendArgs& o = **parsed;
  if (o.mode == vhost_user::BackendArgs::Mode::kHelp) {
    std::fputs(p.usage().c_str(), stdout);
    return 0;
  }
  if (o.mode == vhost_user::BackendArgs::Mode::kPrintCapabilities) {
    std::fputs(p.capabilities().c_str(), stdout);
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

  UniqueFd sock, control;
  if (o.fd >= 0) {
    auto adopted = vhost_user::adopt_socket(o.fd, "--fd");
    if (!adopted.ok()) return fail(p, 1, adopted.error().message);
    sock = std::move(*adopted);
  }
  if (o.control_fd >= 0) {
    auto adopted = adopt_control(o.control_fd);
    if (!adopted.ok()) return fail(p, 1, adopted.error().message);
    control = std::move(*adopted);
  }
  // Started by moss run, the worker is in its namespaces but not yet in its sandbox; started
  // by `moss device ...` or another VMM, it opens paths itself. Either way everything that
  // needs the host's tree happens here, before the pivot hides it.
  const bool jailed = sandbox::launched_jailed();  // enter() consumes what says so.
  auto prepared = prepare(jailed);
  if (!prepared.ok()) return fail(p, 1, prepared.error().message);
  UniqueFd listener;
  std::optional<SocketPathGuard> guard;
  if (!o.socket_path.empty()) {
    auto l = listen_unix(o.socket_path, 8, /*nonblocking=*/true);
    if (!l.ok()) return fail(p, 1, l.error().message);
    listener = std::move(*l);
    // Jailed, the worker cannot remove its socket (no unlink in its policy, and the path is
    // outside its root): whoever started it does.
    if (!jailed) guard.emplace(o.socket_path);
  }
  auto runtime = Runtime::create(std::move(prepared->spec));
  if (!runtime.ok()) return fail(p, 1, runtime.error().message);
  // Nothing above read a byte from the guest or a peer (policies/sandbox.h).
  sandbox::enter(p.role, prepared->keep_dirs);
  std::shared_ptr<void> extras;
  if (prepared->start) {
    auto started = prepared->start(**runtime);
    if (!started.ok()) return fail(p, 1, started.error().message);
    extras = std::move(*started);
  }
  if (auto r = (*runtime)->stop_on_signals(); !r.ok()) return fail(p, 1, r.error().message);
  ::sigprocmask(SIG_UNBLOCK, &ending, nullptr);
  if (control.valid()) {
    if (auto r = (*runtime)->watch_control(std::move(control)); !r.ok()) return fail(p, 1, r.error().message);
  }
  if (listener.valid()) {
    auto r = (*runtime)->serve_listener(listener.get());
    extras.reset();
    if (!r.ok()) return fail(p, 1, r.error().message);
    return 0;
  }
  auto r = (*runtime)->serve_connection(std::move(sock));
  extras.reset();
  if (!r.ok()) return fail(p, 1, (*runtime)->shut_down() ? r.error().message : "dropped the frontend: " + r.error().message);
  return 0;
}

}  // namespace moss::runtime
