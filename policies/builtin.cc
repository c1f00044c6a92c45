#include "policies/builtin.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace moss::policy {
namespace {

struct Embedded {
  const char* name;
  const char* text;
};

const Embedded kPolicies[] = {
#include "policies/builtin_policies.inc"
};

// The built-in policies another one includes, as the policy parser reads the includes (so
// comments, spacing and nesting count as they do there); found once.
bool included(std::string_view name) {
  static const std::set<std::string, std::less<>> names = [] {
    std::set<std::string, std::less<>> out;
    for (const auto& p : kPolicies) {
      const std::string self = p.name;
      (void)parse(self, [&](const std::string& n) {
        if (n != self) out.insert(n);
        return builtin_text(n);
      });
    }
    return out;
  }();
  return names.contains(name);
}

}  // namespace
}  // namespace moss::policy

namespace moss::sandbox {

Role::Role(std::string_view name) {
  auto r = role_from_name(name);
  MOSS_ASSERT(r.has_value());
  name_ = r->name_;
}

bool Role::operator==(const Role& o) const { return std::strcmp(name_, o.name_) == 0; }
bool Role::operator<(const Role& o) const { return std::strcmp(name_, o.name_) < 0; }

std::optional<Role> role_from_name(std::string_view name) {
  for (const auto& p : policy::kPolicies) {
    if (name == p.name && !policy::included(name)) return Role(p.name, Role::Checked{});
  }
  return std::nullopt;
}

std::vector<Role> all_roles() {
  std::vector<Role> roles;
  for (const auto& p : policy::kPolicies) {
    if (auto r = role_from_name(p.name)) roles.push_back(*r);
  }
  std::sort(roles.begin(), roles.end());
  return roles;
}

}  // namespace moss::sandbox

namespace moss::policy {

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
