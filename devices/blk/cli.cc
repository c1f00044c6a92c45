#include "devices/blk/cli.h"

#include "devices/blk/request.h"

namespace moss::blk {

Result<CliOptions> parse_cli(std::span<const char* const> args) {
  CliOptions o;
  auto own_option = [&o](vhost_user::Option& opt) -> Result<bool> {
    const std::string& name = opt.name();
    if (name == "--readonly" || name == "--read-only") {
      MOSS_TRY_VOID(opt.flag());
      o.read_only = true;
    } else if (name == "--disk-fd") {
      MOSS_TRY(o.disk_fd, opt.fd());
    } else if (name == "--disk" || name == "--blk-file") {
      MOSS_TRY(o.disk, opt.path());
    } else if (name == "--num-queues") {
      MOSS_TRY(uint64_t n, opt.number(1, 256, "a number from 1 to 256"));
      o.num_queues = static_cast<uint32_t>(n);
    } else if (name == "--serial") {
      MOSS_TRY(o.serial, opt.value());
      if (o.serial.empty() || o.serial.size() > kIdBytes) {
        return make_error("--serial needs 1 to 20 characters (virtio-blk's ID is 20 bytes)");
      }
      for (char c : o.serial) {
        if (c < 0x21 || c > 0x7e) return make_error("--serial may hold only printable ASCII without spaces");
      }
    } else {
      return false;
    }
    return true;
  };
  MOSS_TRY_VOID(vhost_user::parse_backend_cli(args, &o, own_option));
  if (o.mode != CliOptions::Mode::kServe) return o;
  if (o.disk.empty() && o.disk_fd < 0) return make_error("give the disk image or block device with --disk FILE");
  if (o.disk_fd >= 0 && (o.disk_fd == o.fd || o.disk_fd == o.control_fd)) {
    return make_error("--disk-fd must be a file descriptor of its own");
  }
  return o;
}

std::string usage_text() {
  return "usage: moss-blk (--socket-path PATH | --fd N) (--disk FILE | --disk-fd N) [--readonly] [--num-queues N]\n"
         "                [--serial ID] [--control-fd N]\n"
         "       moss-blk --print-capabilities\n"
         "\n"
         "A virtio-blk vhost-user backend for a raw image file or block device.\n"
         "\n"
         "  --socket-path PATH    listen on a Unix socket at PATH (created, and removed on exit);\n"
         "                        serve one frontend at a time, accepting the next when one leaves\n"
         "  --fd N                serve the already-connected vhost-user socket N; exit when it closes\n"
         "  --disk FILE           the raw disk image or block device (alias: --blk-file); refused if\n"
         "                        another process (moss or QEMU) writes it, or reads it and this\n"
         "                        would write\n"
         "  --disk-fd N           serve the disk already open as fd N (how moss passes it to a\n"
         "                        jailed worker); --disk then only names it in messages\n"
         "  --readonly            refuse writes; the guest sees a read-only disk (alias: --read-only)\n"
         "  --num-queues N        request queues to offer, 1 to 256 (default 1)\n"
         "  --serial ID           the disk's serial (GET_ID), up to 20 characters (default:\n"
         "                        derived from the file's device and inode)\n"
         "  --control-fd N        answer the broker's control requests (ipc/worker.capnp) on the\n"
         "                        SOCK_SEQPACKET socket N; its shutdown request, or closing it,\n"
         "                        ends moss-blk\n"
         "  --print-capabilities  print the vhost-user capabilities as JSON and exit\n"
         "\n"
         "SIGTERM or SIGINT ends it with status 0. MOSS_LOG=info|debug logs more.\n";
}

std::string capabilities_json() { return vhost_user::capabilities_json("block", {"read-only", "blk-file"}); }

}  // namespace moss::blk
