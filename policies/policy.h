// Seccomp policies as text: the parser (pure: text in, rules or an error naming the file and
// line out). The syntax is documented in policies/README.md; in short:
//
//   # a comment, to the end of the line
//   include common                      # every rule of common.policy
//   read                                # allowed with any arguments
//   mmap: arg2 & PROT_EXEC == 0         # allowed when the condition holds
//   ioctl: arg1 == KVM_RUN || arg1 == 0xae80
//   clone3: return ENOSYS               # fails with that errno instead of killing
//
// Compiling a Policy to a kernel filter is seccomp_filter.h; the policies moss ships are
// builtin.h.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace moss::policy {

// One comparison on a system call argument, as libseccomp's SCMP_A0..SCMP_A5 take it:
// `arg OP value`, or for kMaskedEq `(arg & mask) == value`. Arguments are compared as
// 64-bit values.
struct Compare {
  enum class Op { kEq, kNe, kLt, kLe, kGt, kGe, kMaskedEq };
  unsigned arg = 0;  // 0..5
  Op op = Op::kEq;
  uint64_t value = 0;
  uint64_t mask = 0;  // kMaskedEq only.
  bool operator==(const Compare&) const = default;
};

// Every comparison must hold. Each argument appears at most once (a libseccomp limit).
struct Alternative {
  std::vector<Compare> all;
  bool operator==(const Alternative&) const = default;
};

struct Rule {
  std::string syscall;
  std::vector<Alternative> any;  // Empty: any arguments.
  int errno_value = 0;           // Non-zero: the call fails with this errno (`return E...`).
  std::string where;             // "vcpu.policy:12"
  std::string text;              // The rule as written, without its comment.
  std::string comment;           // Its trailing comment, if any.
};

// A policy with every include expanded, rules in file order (an included file's rules at
// the point of its include line; each file included once).
struct Policy {
  std::string name;
  std::vector<Rule> rules;
};

// The text of the policy called `name` ("common" for common.policy), or nullopt.
using Source = std::function<std::optional<std::string>(const std::string& name)>;

// Parses policy `name` and all it includes. Errors are one sentence that starts with the
// file and line, e.g. "vcpu.policy:12: 'KVM_RUNN' is not a constant moss knows".
// It also refuses a system call that one rule allows and another makes fail.
Result<Policy> parse(const std::string& name, const Source& source);

// The named constants a policy may use (PROT_EXEC, AF_UNIX, KVM_RUN, ...), from the system
// headers moss was built with. Errno names (ENOSYS) are separate: errno_value().
std::optional<uint64_t> constant(std::string_view name);
std::optional<int> errno_value(std::string_view name);
// For `moss-policy`: the name of a constant with this value among those the rule's text
// uses, to annotate numbers.
std::vector<std::pair<std::string, uint64_t>> constants_in(std::string_view text);

// One line per rule, numbers in hex, in a form parse() reads back: what moss-policy prints.
std::string format_rule(const Rule& rule);

}  // namespace moss::policy
