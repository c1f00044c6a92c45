#include "devices/vsock/module.h"

#include <string>
#include <utility>

namespace moss::device::vsock {
namespace {

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
  sandbox::Limits standalone_limits(const ArgLookup& arg) const override {
    return limits(static_cast<uint32_t>(number_arg(arg, "--max-connections", 256, 65536)));
  }
  std::vector<std::string> socket_options() const override { return {"--socket-path", "--uds-path"}; }
};

}  // namespace

GuestDevice guest_device() {
  return {.virtio_id = kVirtioId, .pci_class = kPciClass, .config_size = kConfigSize, .num_queues = kQueues,
          .min_queues = kQueues};
}

Result<Device> plan(Host host, const Vm& /*vm: its limits do not depend on the VM*/) {
  MOSS_TRY(Device dev, plan_worker({.kind = "vsock",
                                     .name = "the vsock device",
                                     .guest = guest_device(),
                                     .program = "moss-vsock",
                                     .description = "vsock worker",
                                     .role = module().role(),
                                     .limits = limits(),
                                     .control = false}));
  WorkerPlan& w = *dev.worker;
  w.option_value("--guest-cid", std::to_string(host.cid));
  w.pass_as("--uds-fd", std::move(host.listener));
  w.pass_as("--connect-fd", std::move(host.connect));
  return dev;
}

sandbox::Limits limits(uint32_t max_connections) {
  // The host programs' listener and a kick, a call and an error eventfd per queue (3) fit in
  // the base. Then one host socket per connection carried, up to 64 host programs still
  // sending their CONNECT line (devices/vsock/worker.cc), and room for the one it accepts and
  // closes at once when those limits are reached: it never gets to EMFILE. It writes no file
  // (the vhost-user inflight area is not offered).
  return worker_limits(uint64_t{max_connections} + 64 + 16);
}

const Module& module() {
  static const VsockModule m;
  return m;
}

}  // namespace moss::device::vsock
