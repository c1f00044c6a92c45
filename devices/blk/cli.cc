#include "devices/blk/cli.h"

#include <charconv>
#include <cstring>
#include <optional>

#include "devices/blk/request.h"

namespace moss::blk {
namespace {

Error usage_error(const std::string& what) { return make_error(what); }

// A whole decimal number in [lo, hi], or nullopt.
std::optional<long long> parse_number(const std::string& s, long long lo, long long hi) {
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

}  // namespace

Result<CliOptions> parse_cli(std::span<const char* const> args) {
  CliOptions o;
  bool have_fd = false;
  for (size_t i = 0; i < args.size(); i++) {
    std::string arg = args[i];
    if (arg.rfind("--", 0) != 0) {
      return usage_error(arg == "-h" ? "use --help" : "unexpected argument '" + arg + "'");
    }
    std::string name = arg;
    std::optional<std::string> value;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    auto flag = [&]() -> Result<void> {
      if (value) return usage_error("option " + name + " takes no value");
      return {};
    };
    auto take = [&]() -> Result<std::string> {
      if (value) return *value;
      if (i + 1 >= args.size()) return usage_error("option " + name + " needs a value");
      return std::string(args[++i]);
    };
    if (name == "--help") {
      MOSS_CHECK(flag());
      o.mode = CliOptions::Mode::kHelp;
    } else if (name == "--print-capabilities") {
      MOSS_CHECK(flag());
      o.mode = CliOptions::Mode::kPrintCapabilities;
    } else if (name == "--readonly" || name == "--read-only") {
      MOSS_CHECK(flag());
      o.read_only = true;
    } else if (name == "--socket-path") {
      MOSS_TRY(o.socket_path, take());
      if (o.socket_path.empty()) return usage_error("--socket-path needs a non-empty path");
    } else if (name == "--fd") {
      MOSS_TRY(std::string v, take());
      auto n = parse_number(v, 0, 1 << 30);
      if (!n) return usage_error("--fd needs a file descriptor number, not '" + v + "'");
      o.fd = static_cast<int>(*n);
      have_fd = true;
    } else if (name == "--control-fd") {
      MOSS_TRY(std::string v, take());
      auto n = parse_number(v, 0, 1 << 30);
      if (!n) return usage_error("--control-fd needs a file descriptor number, not '" + v + "'");
      o.control_fd = static_cast<int>(*n);
    } else if (name == "--disk-fd") {
      MOSS_TRY(std::string v, take());
      auto n = parse_number(v, 0, 1 << 30);
      if (!n) return usage_error("--disk-fd needs a file descriptor number, not '" + v + "'");
      o.disk_fd = static_cast<int>(*n);
    } else if (name == "--disk" || name == "--blk-file") {
      MOSS_TRY(o.disk, take());
      if (o.disk.empty()) return usage_error(name + " needs a non-empty path");
    } else if (name == "--num-queues") {
      MOSS_TRY(std::string v, take());
      auto n = parse_number(v, 1, 256);
      if (!n) return usage_error("--num-queues needs a number from 1 to 256, not '" + v + "'");
      o.num_queues = static_cast<uint32_t>(*n);
    } else if (name == "--serial") {
      MOSS_TRY(o.serial, take());
      if (o.serial.empty() || o.serial.size() > kIdBytes) {
        return usage_error("--serial needs 1 to 20 characters (virtio-blk's ID is 20 bytes)");
      }
      for (char c : o.serial) {
        if (c < 0x21 || c > 0x7e) return usage_error("--serial may hold only printable ASCII without spaces");
      }
    } else {
      return usage_error("unknown option '" + name + "'");
    }
  }
  if (o.mode != CliOptions::Mode::kServe) return o;
  if (o.socket_path.empty() == !have_fd) {
    return usage_error(have_fd ? "give --socket-path or --fd, not both" : "give --socket-path PATH or --fd N");
  }
  if (o.disk.empty() && o.disk_fd < 0) return usage_error("give the disk image or block device with --disk FILE");
  if (o.disk_fd >= 0 && (o.disk_fd == o.fd || o.disk_fd == o.control_fd)) {
    return usage_error("--disk-fd must be a file descriptor of its own");
  }
  if (o.control_fd >= 0 && o.control_fd == o.fd) return usage_error("--control-fd and --fd must be different sockets");
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
         "  --disk FILE           the raw disk image or block device (alias: --blk-file)\n"
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

std::string capabilities_json() {
  return "{\n"
         "  \"type\": \"block\",\n"
         "  \"features\": [\n"
         "    \"read-only\",\n"
         "    \"blk-file\"\n"
         "  ]\n"
         "}\n";
}

}  // namespace moss::blk
