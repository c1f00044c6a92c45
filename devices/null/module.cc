#include "devices/null/module.h"

#include <charconv>
#include <string>
#include <utility>

#include "devices/blk/module.h"

namespace moss::device::null {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint32_t kMaxQueues = 64;  // What a virtio-pci function of the vcpu process carries.

std::optional<uint64_t> number(std::string_view v) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return n;
}

class NullModule final : public Module {
 public:
  std::string_view kind() const override { return "null"; }
  Result<Device> plan(std::string_view options, const Vm& vm) const override {
    MOSS_TRY(Options o, parse(options));
    return null::plan(o, vm);
  }
  // moss-null is a virtio-blk backend without a disk: the blk role's policy covers it.
  sandbox::Role role() const override { return sandbox::Role("null"); }
  sandbox::Limits standalone_limits(const ArgLookup& arg) const override {
    auto q = arg("--num-queues");
    uint64_t queues = q ? number(*q).value_or(1) : 1;
    return limits(static_cast<uint32_t>(queues > kMaxQueues ? kMaxQueues : queues));
  }
};

}  // namespace

Result<Options> parse(std::string_view text) {
  Options o;
  bool have_capacity = false;
  for (const auto& opt : split_options(text)) {
    if (opt.key == "capacity" && opt.value) {
      auto n = number(*opt.value);
      if (!n || *n == 0 || *n % 512 != 0) {
        return make_error("--device null: capacity needs a size in bytes, a nonzero multiple of 512, not '" + *opt.value + "'");
      }
      o.capacity = *n;
      have_capacity = true;
    } else if (opt.key == "num-queues" && opt.value) {
      auto n = number(*opt.value);
      if (!n || *n == 0 || *n > kMaxQueues) {
        return make_error("--device null: num-queues needs a number from 1 to " + std::to_string(kMaxQueues) + ", not '" +
                          *opt.value + "'");
      }
      o.num_queues = static_cast<uint16_t>(*n);
    } else {
      return make_error("--device null: unknown option '" + opt.key + "' (it takes capacity=BYTES[,num-queues=N])");
    }
  }
  if (!have_capacity) return make_error("--device null needs capacity=BYTES");
  return o;
}

Result<Device> plan(const Options& options, const Vm& vm) {
  uint16_t queues = options.num_queues ? options.num_queues : static_cast<uint16_t>(vm.cpus);
  Device dev;
  dev.kind = "null";
  dev.name = "the null device";
  // To the guest it is a disk.
  dev.guest = blk::guest_device(queues);
  MOSS_TRY(auto conn, vhost_user_pair());
  MOSS_TRY(auto control, control_pair());
  dev.vhost_user = std::move(conn.first);
  WorkerPlan& w = dev.worker.emplace();
  w.program = "moss-null";
  w.description = "null worker";
  w.role = module().role();
  w.limits = limits(queues);
  w.control = std::move(control.first);
  w.argv = {"moss-null"};
  w.argv.insert(w.argv.end(), {"--fd", std::to_string(w.pass(std::move(conn.second)))});
  w.argv.insert(w.argv.end(), {"--control-fd", std::to_string(w.pass(std::move(control.second)))});
  w.argv.insert(w.argv.end(), {"--capacity", std::to_string(options.capacity)});
  w.argv.insert(w.argv.end(), {"--num-queues", std::to_string(queues)});
  return dev;
}

sandbox::Limits limits(uint32_t queues) {
  sandbox::Limits l;
  // stdio, the vhost-user socket, the control channel, the event loop, up to 8 guest memory
  // regions, and a kick, a call and an error eventfd per queue.
  l.nofile = 64 + 3ull * queues;
  l.nproc = 16;
  // It writes no file; only its stderr can be one (see the vsock module).
  l.fsize = 64 * kMiB;
  l.memlock = 0;
  return l;
}

const Module& module() {
  static const NullModule m;
  return m;
}

}  // namespace moss::device::null
