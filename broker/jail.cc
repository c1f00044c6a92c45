#include "broker/jail.h"


namespace moss::jail {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

}  // namespace

Sandbox vcpu(uint32_t cpus, size_t devices, size_t queues, uint64_t mem_bytes, bool enabled) {
  Sandbox s;
  s.role = sandbox::Role("vcpu");
  s.enabled = enabled;
  // fds: stdio, control, KVM, kernel, initrd, the VM, one per vCPU, eventfds of its own, and
  // per vhost-user device its socket and a little room, plus a kick and a call eventfd per
  // queue.
  s.limits.nofile = 64 + 2ull * cpus + 4ull * devices + 2ull * queues;
  // The main thread, one per vCPU, and room for the threads the C++ runtime may start.
  // Counted per user namespace since Linux 5.14; older kernels count every process of the
  // broker's uid on the host, so an unprivileged user with many would need more.
  s.limits.nproc = cpus + 16ull;
  // The only file it grows is guest RAM's memfd (ftruncate is bound by RLIMIT_FSIZE too).
  s.limits.fsize = mem_bytes + 64 * kMiB;
  s.limits.memlock = 0;
  return s;
}

Sandbox worker(sandbox::Role role, const sandbox::Limits& limits, bool enabled) {
  Sandbox s;
  s.role = role;
  s.enabled = enabled;
  s.limits = limits;
  return s;
}

std::string no_sandbox_warning() {
  return "moss: WARNING: --no-sandbox: the vcpu process and the device workers run WITHOUT their sandbox (no\n"
         "moss: namespaces, no seccomp filter, no capability dropping, no resource limits). A guest that\n"
         "moss: breaks a device gets everything your user account can do. Use it only to debug moss.\n";
}

}  // namespace moss::jail
