#include "tests/harness/backend_process.h"

#include <string>

#include "tests/support/disk_lock_wait.h"

namespace moss::harness {

const char* backend_name(BackendKind kind) {
  return kind == BackendKind::kMossBlk ? "moss-blk" : "qemu-storage-daemon";
}

BackendProcess::BackendProcess(const BackendOptions& options, TempDir dir)
    : WorkerProcess(backend_name(options.kind), std::move(dir)), options_(options) {}

std::string BackendProcess::moss_blk_path() { return binary_path("moss-blk"); }

std::string BackendProcess::qsd_path() { return "/usr/bin/qemu-storage-daemon"; }

std::optional<std::string> BackendProcess::unavailable(BackendKind kind) {
  return WorkerProcess::unavailable(kind == BackendKind::kMossBlk ? moss_blk_path() : qsd_path());
}

Result<std::unique_ptr<BackendProcess>> BackendProcess::start(const BackendOptions& o, std::chrono::milliseconds timeout) {
  if (auto why = unavailable(o.kind)) return make_error(std::string(backend_name(o.kind)) + ": " + *why);
  // Backends taking turns on one image (the bench, reconnect tests) must not see the lock of
  // one that just stopped.
  if (o.null_bytes == 0 && !o.disk.empty()) (void)test::wait_until_disk_unlocked(o.disk, std::chrono::seconds(10));
  MOSS_TRY(TempDir dir, TempDir::create());
  std::unique_ptr<BackendProcess> p(new BackendProcess(o, std::move(dir)));

  std::vector<std::string> args;
  if (o.kind == BackendKind::kMossBlk) {
    args = {moss_blk_path(), "--disk", o.disk};
    if (o.readonly) args.push_back("--readonly");
    if (o.num_queues != 1) args.insert(args.end(), {"--num-queues", std::to_string(o.num_queues)});
    MOSS_TRY(auto common, p->common_args(o));
    args.insert(args.end(), common.begin(), common.end());
  } else {
    std::string node;
    if (o.null_bytes > 0) {
      node = "driver=null-co,node-name=f0,size=" + std::to_string(o.null_bytes);
    } else {
      node = "driver=file,node-name=f0,filename=" + o.disk;
      if (o.direct) node += ",cache.direct=on";
      if (o.io_uring) node += ",aio=io_uring";
      if (!o.locking) node += ",locking=off";
    }
    std::string exp = "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=" + p->socket_path() +
                      ",writable=" + (o.readonly ? "off" : "on");
    if (o.num_queues != 1) exp += ",num-queues=" + std::to_string(o.num_queues);
    args = {qsd_path(), "--blockdev", node, "--export", exp};
    args.insert(args.end(), o.extra_args.begin(), o.extra_args.end());
  }
  MOSS_TRY_VOID(p->spawn(std::move(args)));
  bool connected = o.kind == BackendKind::kMossBlk && o.pass_fd;
  if (!connected) MOSS_TRY_VOID(p->wait_for_sockets({p->socket_path()}, timeout));
  return p;
}

}  // namespace moss::harness
