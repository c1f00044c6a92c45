// The policies moss ships (policies/*.policy), compiled into every binary that links this, and
// the roles that load them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "policies/policy.h"

namespace moss::sandbox {

// A kind of jailed child process, named as its policy file: the role "blk" loads
// policies/blk.policy. The roles are the built-in policies that no other policy includes
// (common and vhost-user are only included), so a device's role comes with its policy file
// and nothing here lists them.
class Role {
 public:
  // The role named `name`; it must be one (MOSS_ASSERT: a name written in moss's own code).
  // A name from outside goes through role_from_name().
  explicit Role(std::string_view name);
  const char* name() const { return name_; }
  bool operator==(const Role& o) const;
  bool operator<(const Role& o) const;

 private:
  struct Checked {};
  Role(const char* name, Checked) : name_(name) {}
  friend std::optional<Role> role_from_name(std::string_view name);
  const char* name_;  // The built-in policy's own name: static storage.
};

inline const char* role_name(Role role) { return role.name(); }  // "vcpu", "blk", "vsock", "null"
std::optional<Role> role_from_name(std::string_view name);
std::vector<Role> all_roles();  // Sorted by name.

}  // namespace moss::sandbox

namespace moss::policy {

// The text of a built-in policy file by name ("common"), or nullopt.
std::optional<std::string> builtin_text(const std::string& name);
std::vector<std::string> builtin_names();
// The effective policy of a role: its file with every include expanded.
Result<Policy> builtin(sandbox::Role role);

}  // namespace moss::policy
