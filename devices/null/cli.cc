#include "devices/null/cli.h"

#include "devices/worker/main.h"
#include "vhost-user/backend_cli.h"

namespace moss::null {

Result<CliOptions> parse_cli(std::span<const char* const> args) {
  CliOptions o;
  bool have_capacity = false;
  auto own_option = [&](vhost_user::Option& opt) -> Result<bool> {
    if (opt.name() == "--capacity") {
      MOSS_TRY(o.device.capacity_bytes, opt.number(512, uint64_t{1} << 60, "a size in bytes, a multiple of 512"));
      if (o.device.capacity_bytes % 512 != 0) return make_error("--capacity needs a size in bytes, a multiple of 512");
      have_capacity = true;
    } else if (opt.name() == "--num-queues") {
      MOSS_TRY(uint64_t n, opt.number(1, 256, "a number from 1 to 256"));
      o.device.num_queues = static_cast<uint32_t>(n);
    } else if (opt.name() == "--no-read-zeroes") {
      MOSS_TRY_VOID(opt.flag());
      o.device.read_zeroes = false;
    } else {
      return false;
    }
    return true;
  };
  MOSS_TRY_VOID(vhost_user::parse_backend_cli(args, &o, own_option));
  if (o.mode == CliOptions::Mode::kServe && !have_capacity) return make_error("give the disk's size with --capacity BYTES");
  return o;
}

std::string usage_text() {
  return "usage: moss-null (--socket-path PATH | --fd N) --capacity BYTES [--num-queues N] [--no-read-zeroes] [--control-fd N]\n"
         "       moss-null --print-capabilities\n"
         "\n"
         "A virtio-blk vhost-user backend with no disk: every request is parsed and answered at\n"
         "once (reads give zeros, writes go nowhere). For measuring the vhost-user path.\n"
         "\n"
         "  --socket-path PATH    listen on a Unix socket at PATH; serve one frontend at a time\n"
         "  --fd N                serve the already-connected vhost-user socket N; exit when it closes\n"
         "  --capacity BYTES      the disk size the guest sees, a multiple of 512\n"
         "  --num-queues N        request queues to offer, 1 to 256 (default 1)\n"
         "  --no-read-zeroes      leave a read's buffers as they are (qemu null-co's read-zeroes=off)\n"
         "  --control-fd N        answer the broker's control requests (ipc/worker.capnp) on N\n"
         "  --print-capabilities  print the vhost-user capabilities as JSON and exit\n"
         "\n"
         "SIGTERM or SIGINT ends it with status 0.\n";
}

std::string capabilities_json() { return vhost_user::capabilities_json("block", {}); }

int null_main(int argc, char** argv) {
  return runtime::worker_main(argc, argv, {"moss-null", sandbox::Role("null"), usage_text, capabilities_json}, parse_cli,
                              [](const CliOptions& o, bool) -> Result<runtime::Prepared> {
                                runtime::Prepared p;
                                p.spec = worker_spec(o.device);
                                return p;
                              });
}

}  // namespace moss::null
