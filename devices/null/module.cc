#include "devices/null/module.h"

#include <string>
#include <utility>

#include "devices/blk/module.h"

namespace moss::device::null {
namespace {

constexpr uint32_t kMaxQueues = 64;  // What a virtio-pci function of the vcpu process carries.

class NullModule final : public Module {
 public:
  std::string_view kind() const override { return "null"; }
  Result<Device> plan(std::string_view options, const Vm& vm) const override {
    MOSS_TRY(Options o, parse(options));
    return null::plan(o, vm);
  }
  sandbox::Limits standalone_limits(const ArgLookup& arg) const override {
    return limits(static_cast<uint32_t>(number_arg(arg, "--num-queues", 1, kMaxQueues)));
  }
};

}  // namespace

Result<Options> parse(std::string_view text) {
  Options o;
  bool have_capacity = false;
  for (const auto& opt : split_options(text)) {
    if (opt.key == "capacity" && opt.value) {
      auto n = parse_number(*opt.value);
      if (!n || *n == 0 || *n % 512 != 0) {
        return make_error("--device null: capacity needs a size in bytes, a nonzero multiple of 512, not '" + *opt.value + "'");
      }
      o.capacity = *n;
      have_capacity = true;
    } else if (opt.key == "num-queues" && opt.value) {
      auto n = parse_number(*opt.value);
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
  MOSS_TRY(Device dev, plan_worker({.kind = "null",
                                     .name = "the null device",
                                     .guest = blk::guest_device(queues),  // To the guest it is a disk.
                                     .program = "moss-null",
                                     .description = "null worker",
                                     .role = module().role(),
                                     .limits = limits(queues)}));
  dev.worker->option_value("--capacity", std::to_string(options.capacity));
  dev.worker->option_value("--num-queues", std::to_string(queues));
  return dev;
}

sandbox::Limits limits(uint32_t queues) {
  // A kick, a call and an error eventfd per queue; it writes no file.
  return worker_limits(3ull * queues);
}

const Module& module() {
  static const NullModule m;
  return m;
}

}  // namespace moss::device::null
