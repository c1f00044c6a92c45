// moss-blk's program logic, a library function so that `moss device blk` can run it too.
#include <fcntl.h>
#include <liburing.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <vector>

#include "base/log.h"
#include "devices/blk/cli.h"
#include "devices/blk/disk.h"
#include "base/unix_socket.h"
#include "devices/blk/worker.h"
#include "policies/probes.h"
#include "policies/sandbox.h"

namespace moss::blk {
namespace {

int fail(int status, const std::string& message) {
  std::fprintf(stderr, "moss-blk: %s\n", message.c_str());
  return status;
}

// What a compromised worker would submit to its ring to get around its seccomp policy (test
// hooks, MOSS_TEST_PROBE=blk): each must fail with EACCES (Engine's ring restrictions).
std::vector<sandbox::OwnProbe> ring_probes(Worker& worker) {
  auto submit = [&worker](const io_uring_sqe& sqe) {
    int r = worker.engine().submit_raw(sqe);
    if (r >= 0) ::close(r);  // A socket or a file: the probe got through.
    return r < 0 ? -r : 0;
  };
  return {
      {"ring-socket", [submit] {
         io_uring_sqe sqe{};
         io_uring_prep_socket(&sqe, AF_VSOCK, SOCK_STREAM, 0, 0);  // No network namespace confines vsock.
         return submit(sqe);
       }},
      {"ring-openat", [submit] {
         io_uring_sqe sqe{};
         io_uring_prep_openat(&sqe, AT_FDCWD, "/", O_RDONLY | O_DIRECTORY, 0);
         return submit(sqe);
       }},
  };
}

}  // namespace

int blk_main(int argc, char** argv) {
  log_init("moss-blk");
  std::vector<const char*> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  auto parsed = parse_cli(args);
  if (!parsed.ok()) return fail(2, parsed.error().message + " (see moss-blk --help)");
  const CliOptions& o = *parsed;
  if (o.mode == CliOptions::Mode::kHelp) {
    std::fputs(usage_text().c_str(), stdout);
    return 0;
  }
  if (o.mode == CliOptions::Mode::kPrintCapabilities) {
    std::fputs(capabilities_json().c_str(), stdout);
    return 0;
  }
  // A frontend that goes away mid-reply must be an error value, not a signal.
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
  UniqueFd control;
  if (o.control_fd >= 0) {
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(o.control_fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) {
      return fail(1, "--control-fd " + std::to_string(o.control_fd) + " is not an open SOCK_SEQPACKET socket");
    }
    control.reset(o.control_fd);
    ::fcntl(o.control_fd, F_SETFD, FD_CLOEXEC);
  }
  // Started by moss run, the worker is in its namespaces but not yet in its sandbox: the disk
  // comes as --disk-fd. Started by `moss device blk` (broker/standalone.h), it opens --disk and
  // makes its --socket-path listener here, before the pivot hides the host's tree.
  const bool jailed = sandbox::launched_jailed();  // enter() consumes what says so.
  auto disk = o.disk_fd >= 0 ? Disk::from_fd(UniqueFd(o.disk_fd), o.read_only,
                                             "the disk " + (o.disk.empty() ? "(fd " + std::to_string(o.disk_fd) + ")" : o.disk))
                             : Disk::open(o.disk, o.read_only);
  if (!disk.ok()) return fail(1, disk.error().message);
  // The worker's io_uring is made here, restricted and enabled (engine.h), before the seccomp
  // filter loads: blk.policy forbids io_uring_setup and io_uring_register, so the ring cannot
  // be replaced by an unrestricted one afterwards. One ring serves every queue.
  auto worker = Worker::create(*disk, DeviceOptions{o.num_queues, o.serial});
  if (!worker.ok()) return fail(1, worker.error().message);
  UniqueFd listener;
  std::optional<SocketPathGuard> guard;
  if (!o.socket_path.empty()) {
    auto l = listen_unix(o.socket_path, 8, /*nonblocking=*/false);
    if (!l.ok()) return fail(1, l.error().message);
    listener = std::move(*l);
    // Jailed, the worker cannot remove its socket (blk.policy has no unlink, and the path is
    // outside its root): whoever started it does.
    if (!jailed) guard.emplace(o.socket_path);
  }
  // Nothing above read a byte from the guest or a peer (policies/sandbox.h).
  sandbox::enter(sandbox::Role::kBlk);
  sandbox::run_own_probes_if_asked(sandbox::Role::kBlk, ring_probes(**worker));
  if (auto r = (*worker)->stop_on_signals(); !r.ok()) return fail(1, r.error().message);
  ::sigprocmask(SIG_UNBLOCK, &ending, nullptr);
  if (control.valid()) {
    if (auto r = (*worker)->watch_control(std::move(control), o.disk); !r.ok()) return fail(1, r.error().message);
  }

  if (listener.valid()) {
    auto r = (*worker)->serve_listener(listener.get());
    if (!r.ok()) return fail(1, r.error().message);
    return 0;
  }
  auto r = (*worker)->serve_connection(std::move(sock));
  if (!r.ok()) return fail(1, "dropped the frontend: " + r.error().message);
  return 0;
}

}  // namespace moss::blk
