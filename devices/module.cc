#include "devices/module.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace moss::device {
namespace {

Result<std::pair<UniqueFd, UniqueFd>> pair_of(int type, const char* what) {
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) {
    return sys_error("create", what);
  }
  return std::make_pair(UniqueFd(sv[0]), UniqueFd(sv[1]));
}

}  // namespace

Result<std::pair<UniqueFd, UniqueFd>> vhost_user_pair() { return pair_of(SOCK_STREAM, "a vhost-user connection"); }
Result<std::pair<UniqueFd, UniqueFd>> control_pair() { return pair_of(SOCK_SEQPACKET, "a worker's control channel"); }

Result<Device> plan_worker(WorkerDevice d) {
  Device dev;
  dev.kind = std::move(d.kind);
  dev.name = std::move(d.name);
  dev.guest = d.guest;
  MOSS_TRY(auto conn, vhost_user_pair());
  dev.vhost_user = std::move(conn.first);
  WorkerPlan& w = dev.worker.emplace();
  w.program = d.program;
  w.description = std::move(d.description);
  w.role = d.role;
  w.limits = d.limits;
  w.argv = {std::move(d.program)};
  w.pass_as("--fd", std::move(conn.second));
  if (d.control) {
    MOSS_TRY(auto control, control_pair());
    w.control = std::move(control.first);
    w.pass_as("--control-fd", std::move(control.second));
  }
  return dev;
}

sandbox::Limits worker_limits(uint64_t fds) {
  sandbox::Limits l;
  l.nofile = 64 + fds;
  l.nproc = 16;
  l.fsize = 64 * kMiB;
  l.memlock = 0;
  return l;
}

std::optional<uint64_t> parse_number(std::string_view text) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return n;
}

uint64_t number_arg(const ArgLookup& arg, std::string_view name, uint64_t fallback, uint64_t max) {
  auto v = arg(name);
  uint64_t n = v ? parse_number(*v).value_or(fallback) : fallback;
  return n > max ? max : n;
}

std::vector<Option> split_options(std::string_view text) {
  std::vector<Option> out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) out.push_back({std::string(item), std::nullopt});
    else out.push_back({std::string(item.substr(0, eq)), std::string(item.substr(eq + 1))});
  }
  return out;
}

Result<void> Module::check_recorded(std::span<const uint8_t> recorded, std::span<const uint8_t> given,
                                    unsigned nth) const {
  if (std::ranges::equal(recorded, given)) return {};
  return make_error(noun() + " " + std::to_string(nth) + " is not the one the spore was made with; give that one, "
                    "with the options it had");
}

}  // namespace moss::device
