// moss-blk's program logic, a library function so that `moss device blk` can run it too: the
// disk and its io_uring are opened before the sandbox; the rest is the worker runtime's.
#include <fcntl.h>
#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "base/syscall.h"
#include "devices/blk/cli.h"
#include "devices/blk/worker.h"
#include "devices/worker/main.h"
#include "policies/probes.h"

namespace moss::blk {
namespace {

// What a compromised worker would submit to its ring to get around its seccomp policy (test
// hooks, MOSS_TEST_PROBE=blk): each must fail with EACCES (Engine's ring restrictions).
std::vector<sandbox::OwnProbe> ring_probes(Engine& engine) {
  auto submit = [&engine](const io_uring_sqe& sqe) {
    int r = engine.submit_raw(sqe);
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

Result<runtime::Prepared> prepare(const CliOptions& o) {
  // Started by moss run, the disk comes as --disk-fd (a jailed worker cannot open paths).
  MOSS_TRY(Disk disk, o.disk_fd >= 0 ? Disk::from_fd(UniqueFd(o.disk_fd), o.read_only,
                                                       "the disk " + (o.disk.empty() ? "(fd " + std::to_string(o.disk_fd) + ")" : o.disk))
                                       : Disk::open(o.disk, o.read_only));
  auto shared_disk = std::make_shared<const Disk>(std::move(disk));
  // The worker's io_uring is made here, restricted and enabled (engine.h), before the seccomp
  // filter loads: blk.policy forbids io_uring_setup and io_uring_register, so the ring cannot
  // be replaced by an unrestricted one afterwards. One ring serves every queue.
  MOSS_TRY(std::unique_ptr<Engine> made, Engine::create(*shared_disk));
  std::shared_ptr<Engine> engine(std::move(made));
  runtime::Prepared p;
  p.spec = worker_spec(shared_disk, engine, DeviceOptions{o.num_queues, o.serial}, o.disk);
  p.start = [engine](runtime::Runtime&) -> Result<std::shared_ptr<void>> {
    sandbox::run_own_probes_if_asked(sandbox::Role("blk"), ring_probes(*engine));
    return std::shared_ptr<void>();
  };
  return p;
}

}  // namespace

runtime::WorkerSpec worker_spec(std::shared_ptr<const Disk> disk, std::shared_ptr<Engine> engine,
                                DeviceOptions options, std::string disk_name) {
  runtime::WorkerSpec spec;
  const DiskInfo& info = disk->info();
  spec.description = {"blk",
                      options.num_queues,
                      {{"disk", disk_name},
                       {"readOnly", info.read_only ? "true" : "false"},
                       {"capacityBytes", std::to_string(info.size_bytes)}}};
  spec.make_device = [disk, engine, options](event_base* loop) {
    return std::make_unique<BlkDevice>(*disk, *engine, options, loop);
  };
  spec.flush = [disk]() -> Result<void> {
    auto synced = MOSS_SYS(::fdatasync(disk->fd()));
    if (!synced.ok()) return make_error("cannot flush the disk before shutting down: " + synced.error().message, synced.error().err);
    return {};
  };
  return spec;
}

int blk_main(int argc, char** argv) {
  return runtime::worker_main(argc, argv, {"moss-blk", sandbox::Role("blk"), usage_text, capabilities_json}, parse_cli,
                              [](const CliOptions& o, bool) { return prepare(o); });
}

}  // namespace moss::blk
