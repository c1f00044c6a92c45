#include "devices/vsock/cli.h"

#include <sys/un.h>

#include "devices/vsock/packet.h"

namespace moss::vsock {

Result<CliOptions> parse_cli(std::span<const char* const> args) {
  CliOptions o;
  bool have_cid = false;
  auto own_option = [&](vhost_user::Option& opt) -> Result<bool> {
    const std::string& name = opt.name();
    if (name == "--guest-cid") {
      MOSS_TRY(o.guest_cid, opt.number(kMinGuestCid, kMaxGuestCid, "a CID from 3 to 4294967294 (0-2 are reserved)"));
      have_cid = true;
    } else if (name == "--uds-path") {
      MOSS_TRY(o.uds_path, opt.value());
      // Guest connections to port N go to "<path>_N": room for "_4294967295" in sun_path.
      constexpr size_t kMax = kMaxUdsPath;
      static_assert(kMax == sizeof(sockaddr_un{}.sun_path) - 1 - 11);
      if (o.uds_path.empty() || o.uds_path.size() > kMax) {
        return make_error("--uds-path needs a path of 1 to " + std::to_string(kMax) +
                          " bytes (\"_<port>\" is appended for guest connections)");
      }
    } else if (name == "--uds-fd") {
      MOSS_TRY(o.uds_fd, opt.fd());
    } else if (name == "--connect-fd") {
      MOSS_TRY(o.connect_fd, opt.fd());
    } else if (name == "--max-connections") {
      MOSS_TRY(uint64_t n, opt.number(1, 4096, "a number from 1 to 4096"));
      o.max_connections = static_cast<uint32_t>(n);
    } else {
      return false;
    }
    return true;
  };
  MOSS_TRY_VOID(vhost_user::parse_backend_cli(args, &o, own_option));
  if (o.mode != CliOptions::Mode::kServe) return o;
  if (!have_cid) return make_error("give the guest's CID with --guest-cid N");
  if (o.uds_path.empty() && o.uds_fd < 0) {
    return make_error("give the host side's socket path with --uds-path PATH (or its listener with --uds-fd N)");
  }
  if (o.uds_path.empty() && o.connect_fd < 0) {
    return make_error("guest connections go to \"<uds-path>_<port>\": give --uds-path PATH, or --connect-fd N");
  }
  if (!o.uds_path.empty() && o.uds_path == o.socket_path) {
    return make_error("--uds-path and --socket-path must be different paths");
  }
  auto same = [](int a, int b) { return a >= 0 && a == b; };
  if (same(o.fd, o.uds_fd) || same(o.fd, o.connect_fd) || same(o.uds_fd, o.connect_fd)) {
    return make_error("--fd, --uds-fd and --connect-fd must be different fds");
  }
  return o;
}

std::string usage_text() {
  return "usage: moss-vsock (--socket-path PATH | --fd N) --guest-cid CID --uds-path PATH\n"
         "                  [--uds-fd N] [--connect-fd N] [--max-connections N]\n"
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
         "  --uds-fd N            the listener for host programs, bound and listening already (its\n"
         "                        starter owns the path); --uds-path may then be left out\n"
         "  --connect-fd N        ask for guest connections' host sockets on the SOCK_SEQPACKET\n"
         "                        socket N instead of connecting to PATH_N (see devices/vsock/README.md);\n"
         "                        jailed, the worker then keeps no host directory\n"
         "  --max-connections N   connections carried at once, 1 to 4096 (default 256)\n"
         "  --print-capabilities  print the vhost-user capabilities as JSON and exit\n"
         "\n"
         "SIGTERM or SIGINT ends it with status 0. MOSS_LOG=info|debug logs more.\n";
}

std::string capabilities_json() { return vhost_user::capabilities_json("vsock", {}); }

}  // namespace moss::vsock
