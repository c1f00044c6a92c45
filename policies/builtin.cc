#include "policies/builtin.h"

namespace moss::sandbox {

const char* role_name(Role role) {
  switch (role) {
    case Role::kVcpu: return "vcpu";
    case Role::kBlk: return "blk";
    case Role::kVsock: return "vsock";
    case Role::kNull: return "null";
  }
  return "?";
}

std::optional<Role> role_from_name(std::string_view name) {
  for (Role r : all_roles()) {
    if (name == role_name(r)) return r;
  }
  return std::nullopt;
}

std::vector<Role> all_roles() { return {Role::kVcpu, Role::kBlk, Role::kVsock, Role::kNull}; }

}  // namespace moss::sandbox

namespace moss::policy {
namespace {

struct Embedded {
  const char* name;
  const char* text;
};

const Embedded kPolicies[] = {
#include "policies/builtin_policies.inc"
};

}  // namespace

std::optional<std::string> builtin_text(const std::string& name) {
  for (const auto& p : kPolicies) {
    if (name == p.name) return std::string(p.text);
  }
  return std::nullopt;
}

std::vector<std::string> builtin_names() {
  std::vector<std::string> names;
  for (const auto& p : kPolicies) names.emplace_back(p.name);
  return names;
}

Result<Policy> builtin(sandbox::Role role) { return parse(sandbox::role_name(role), builtin_text); }

}  // namespace moss::policy
