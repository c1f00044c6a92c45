#include "devices/module.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
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
