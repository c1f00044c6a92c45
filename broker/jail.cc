#include "broker/jail.h"

#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

namespace moss::jail {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

}  // namespace

Sandbox vcpu(uint32_t cpus, size_t disks, uint64_t mem_bytes, bool enabled) {
  Sandbox s;
  s.role = sandbox::Role::kVcpu;
  s.enabled = enabled;
  // fds: stdio, control, KVM, kernel, initrd, the VM, one per vCPU, eventfds of its own, and
  // per disk its socket plus a kick and a call eventfd per queue (one queue per vCPU).
  s.limits.nofile = 64 + 2ull * cpus + disks * (4 + 2ull * cpus);
  // The main thread, one per vCPU, and room for the threads the C++ runtime may start.
  // Counted per user namespace since Linux 5.14; older kernels count every process of the
  // broker's uid on the host, so an unprivileged user with many would need more.
  s.limits.nproc = cpus + 16ull;
  // The only file it grows is guest RAM's memfd (ftruncate is bound by RLIMIT_FSIZE too).
  s.limits.fsize = mem_bytes + 64 * kMiB;
  s.limits.memlock = 0;
  return s;
}

Sandbox blk(uint32_t queues, uint64_t disk_bytes, bool enabled) {
  Sandbox s;
  s.role = sandbox::Role::kBlk;
  s.enabled = enabled;
  // stdio, the vhost-user socket, the disk, the io_uring and its eventfd, the event loop, up
  // to 8 guest memory regions, the inflight buffer, and a kick and a call eventfd per queue.
  s.limits.nofile = 64 + 2ull * queues;
  // clone is not in blk.policy; these are io_uring's io-wq workers, which the kernel counts
  // as the worker's tasks and caps at this limit.
  s.limits.nproc = 64 + 4ull * queues;
  // Writes stay inside the disk; the inflight buffer (a memfd it sizes) is far smaller than
  // 64 MiB.
  s.limits.fsize = disk_bytes > 64 * kMiB ? disk_bytes : 64 * kMiB;
  // Kernels before 5.12 charge io_uring's rings to RLIMIT_MEMLOCK.
  s.limits.memlock = 8 * kMiB;
  return s;
}

Sandbox vsock(bool enabled, uint32_t max_connections) {
  Sandbox s;
  s.role = sandbox::Role::kVsock;
  s.enabled = enabled;
  // stdio, the vhost-user socket, the host programs' listener, the event loop (epoll and
  // libevent's signal pipe), up to 8 guest memory regions, a kick, a call and an error eventfd
  // per queue (3): within 64. Then one host socket per connection carried, up to 64 host
  // programs still sending their CONNECT line (devices/vsock/worker.cc), and room for the one
  // it accepts and closes at once when those limits are reached: it never gets to EMFILE.
  s.limits.nofile = 64 + uint64_t{max_connections} + 64 + 16;
  // One thread (libevent's loop starts none; clone is not in vsock.policy), and room for the
  // test hooks' probes, which fork one child at a time. Counted as for vcpu() above.
  s.limits.nproc = 16;
  // It writes no file of its own (the vhost-user inflight area is not offered); only its
  // stderr can be one, a file the user sent the broker's stderr to, and RLIMIT_FSIZE bounds
  // the offset of every write to it, so a little room rather than none.
  s.limits.fsize = 64 * kMiB;
  s.limits.memlock = 0;
  return s;
}

Sandbox null_device(uint32_t queues, bool enabled) {
  Sandbox s;
  s.role = sandbox::Role::kNull;
  s.enabled = enabled;
  // stdio, the vhost-user socket, the event loop, up to 8 guest memory regions, and a kick, a
  // call and an error eventfd per queue.
  s.limits.nofile = 64 + 3ull * queues;
  // One thread, and room for the test hooks' probes (one child at a time).
  s.limits.nproc = 16;
  s.limits.fsize = 1 * kMiB;  // It writes no file; a little room rather than none.
  s.limits.memlock = 0;
  return s;
}

uint64_t disk_bytes(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return 0;
  if (S_ISBLK(st.st_mode)) {
    uint64_t size = 0;
    return ioctl(fd, BLKGETSIZE64, &size) == 0 ? size : 0;
  }
  return static_cast<uint64_t>(st.st_size);
}

std::string no_sandbox_warning() {
  return "moss: WARNING: --no-sandbox: the vcpu process and the device workers run WITHOUT their sandbox (no\n"
         "moss: namespaces, no seccomp filter, no capability dropping, no resource limits). A guest that\n"
         "moss: breaks a device gets everything your user account can do. Use it only to debug moss.\n";
}

}  // namespace moss::jail
