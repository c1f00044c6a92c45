#include "devices/vsock/module.h"

#include <charconv>
#include <string>
#include <utility>

namespace moss::device::vsock {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint16_t kVirtioId = 19;
constexpr uint32_t kPciClass = 0x078000;  // Communication, other: as QEMU's vhost-vsock-pci.
constexpr uint32_t kConfigSize = 8;       // le64 guest_cid (5.10.4).
constexpr uint16_t kQueues = 3;           // rx, tx, event.

class VsockModule final : public Module {
 public:
  std::string_view kind() const override { return "vsock"; }
  Result<Device> plan(std::string_view, const Vm&) const override {
    return make_error("every VM has one vsock device, which moss run adds itself (--vsock-socket PATH places its socket)");
  }
  sandbox::Role role() const override { return sandbox::Role("vsock"); }
  sandbox::Limits standalone_limits(const ArgLookup& arg) const override {
    uint64_t max = 256;
    if (auto v = arg("--max-connections")) {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
      if (ec == std::errc() && end == v->data() + v->size()) max = n;
    }
    return limits(static_cast<uint32_t>(max > 65536 ? 65536 : max));
  }
  std::vector<std::string> socket_options() const override { return {"--socket-path", "--uds-path"}; }
};

}  // namespace

GuestDevice guest_device() {
  GuestDevice g;
  g.virtio_id = kVirtioId;
  g.pci_class = kPciClass;
  g.config_size = kConfigSize;
  g.num_queues = kQueues;
  g.min_queues = kQueues;
  return g;
}

Result<Device> plan(Host host, const Vm& /*vm: its limits do not depend on the VM*/) {
  Device dev;
  dev.kind = "vsock";
  dev.name = "the vsock device";
  dev.guest = guest_device();
  MOSS_TRY(auto conn, vhost_user_pair());
  dev.vhost_user = std::move(conn.first);
  WorkerPlan& w = dev.worker.emplace();
  w.program = "moss-vsock";
  w.description = "vsock worker";
  w.role = sandbox::Role("vsock");
  w.limits = limits();
  w.argv = {"moss-vsock"};
  w.argv.insert(w.argv.end(), {"--fd", std::to_string(w.pass(std::move(conn.second)))});
  w.argv.insert(w.argv.end(), {"--guest-cid", std::to_string(host.cid)});
  w.argv.insert(w.argv.end(), {"--uds-fd", std::to_string(w.pass(std::move(host.listener)))});
  w.argv.insert(w.argv.end(), {"--connect-fd", std::to_string(w.pass(std::move(host.connect)))});
  return dev;
}

sandbox::Limits limits(uint32_t max_connections) {
  sandbox::Limits l;
  // stdio, the vhost-user socket, the host programs' listener, the event loop (epoll and
  // libevent's signal pipe), up to 8 guest memory regions, a kick, a call and an error eventfd
  // per queue (3): within 64. Then one host socket per connection carried, up to 64 host
  // programs still sending their CONNECT line (devices/vsock/worker.cc), and room for the one
  // it accepts and closes at once when those limits are reached: it never gets to EMFILE.
  l.nofile = 64 + uint64_t{max_connections} + 64 + 16;
  // One thread (libevent's loop starts none; clone is not in vsock.policy), and room for the
  // test hooks' probes, which fork one child at a time. Counted as for the vcpu process.
  l.nproc = 16;
  // It writes no file of its own (the vhost-user inflight area is not offered); only its
  // stderr can be one, a file the user sent the broker's stderr to, and RLIMIT_FSIZE bounds
  // the offset of every write to it, so a little room rather than none.
  l.fsize = 64 * kMiB;
  l.memlock = 0;
  return l;
}

const Module& module() {
  static const VsockModule m;
  return m;
}

}  // namespace moss::device::vsock
