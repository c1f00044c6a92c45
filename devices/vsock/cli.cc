#include "devices/vsock/cli.h"

#include <sys/un.h>

#include <charconv>
#include <optional>

#include "devices/vsock/packet.h"

namespace moss::vsock {
namespace {

// A whole decimal number in [lo, hi], or nullopt.
std::optional<uint64_t> parse_number(const std::string& s, uint64_t lo, uint64_t hi) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

}  // namespace

Result<CliOptions> parse_cli(std::span<const char* const> args) {
  CliOptions o;
  bool have_fd = false;
  bool have_cid = false;
  for (size_t i = 0; i < args.size(); i++) {
    std::string arg = args[i];
    if (arg.rfind("--", 0) != 0) return make_error(arg == "-h" ? "use --help" : "unexpected argument '" + arg + "'");
    std::string name = arg;
    std::optional<std::string> value;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    auto flag = [&]() -> Result<void> {
      if (value) return make_error("option " + name + " takes no value");
      return {};
    };
    auto take = [&]() -> Result<std::string> {
      if (value) return *value;
      if (i + 1 >= args.size()) return make_error("option " + name + " needs a value");
      return std::string(args[++i]);
    };
    if (name == "--help") {
      MOSS_CHECK(flag());
      o.mode = CliOptions::Mode::kHelp;
    } else if (name == "--print-capabilities") {
      MOSS_CHECK(flag());
      o.mode = CliOptions::Mode::kPrintCapabilities;
    } else if (name == "--socket-path") {
      MOSS_TRY(o.socket_path, take());
      if (o.socket_path.empty()) return make_error("--socket-path needs a non-empty path");
    } else if (name == "--fd") {
      MOSS_TRY(std::string v, take());
      auto n = parse_number(v, 0, 1 << 30);
      if (!n) return make_error("--fd needs a file descriptor number, not '" + v + "'");
      o.fd = static_cast<int>(*n);
      have_fd = true;
    } else if (name == "--guest-cid") {
      MOSS_TRY(std::string v, take());
      auto n = parse_number(v, kMinGuestCid, kMaxGuestCid);
      if (!n) return make_error("--guest-cid needs a CID from 3 to 4294967294 (0-2 are reserved), not '" + v + "'");
      o.guest_cid = *n;
      have_cid = true;
    } else if (name == "--uds-path") {
      MOSS_TRY(o.uds_path, take());
      // Guest connections to port N go to "<path>_N": room for "_4294967295" in sun_path.
      constexpr size_t kMax = kMaxUdsPath;
      static_assert(kMax == sizeof(sockaddr_un{}.sun_path) - 1 - 11);
      if (o.uds_path.empty() || o.uds_path.size() > kMax) {
        return make_error("--uds-path needs a path of 1 to " + std::to_string(kMax) + " bytes (\"_<port>\" is appended for guest connections)");
      }
    } else if (name == "--max-connections") {
      MOSS_TRY(std::string v, take());
      auto n = parse_number(v, 1, 4096);
      if (!n) return make_error("--max-connections needs a number from 1 to 4096, not '" + v + "'");
      o.max_connections = static_cast<uint32_t>(*n);
    } else {
      return make_error("unknown option '" + name + "'");
    }
  }
  if (o.mode != CliOptions::Mode::kServe) return o;
  if (o.socket_path.empty() == !have_fd) {
    return make_error(have_fd ? "give --socket-path or --fd, not both" : "give --socket-path PATH or --fd N");
  }
  if (!have_cid) return make_error("give the guest's CID with --guest-cid N");
  if (o.uds_path.empty()) return make_error("give the host side's socket path with --uds-path PATH");
  if (o.uds_path == o.socket_path) return make_error("--uds-path and --socket-path must be different paths");
  return o;
}

std::string usage_text() {
  return "usage: moss-vsock (--socket-path PATH | --fd N) --guest-cid CID --uds-path PATH\n"
         "                  [--max-connections N]\n"
         "       moss-vsock --print-capabilities\n"
         "\n"
         "A virtio-vsock vhost-user backend in hybrid mode: the guest's vsock streams are\n"
         "carried to and from Unix sockets on the host.\n"
         "\n"
         "  --socket-path PATH    listen for the VMM (vhost-user) on a Unix socket at PATH (created,\n"
         "                        and removed on exit); serve one frontend at a time\n"
         "  --fd N                serve the already-connected vhost-user socket N; exit when it closes\n"
         "  --guest-cid CID       the guest's context ID, 3 to 4294967294\n"
         "  --uds-path PATH       host programs connect to the Unix socket PATH and send\n"
         "                        \"CONNECT <port>\\n\"; the answer is \"OK <host port>\\n\" once the\n"
         "                        guest accepted. A guest connecting to host port N reaches the\n"
         "                        Unix socket PATH_N\n"
         "  --max-connections N   connections carried at once, 1 to 4096 (default 256)\n"
         "  --print-capabilities  print the vhost-user capabilities as JSON and exit\n"
         "\n"
         "SIGTERM or SIGINT ends it with status 0. MOSS_LOG=info|debug logs more.\n";
}

std::string capabilities_json() {
  return "{\n"
         "  \"type\": \"vsock\",\n"
         "  \"features\": []\n"
         "}\n";
}

}  // namespace moss::vsock
