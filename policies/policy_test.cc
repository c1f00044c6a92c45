#include "policies/policy.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <map>

namespace moss::policy {
namespace {

// Policies from a map, as tests write them.
Source files(std::map<std::string, std::string> m) {
  return [m](const std::string& name) -> std::optional<std::string> {
    auto it = m.find(name);
    if (it == m.end()) return std::nullopt;
    return it->second;
  };
}

Result<Policy> parse_one(const std::string& text) { return parse("t", files({{"t", text}})); }

std::string error_of(const std::string& text) {
  auto p = parse_one(text);
  return p.ok() ? std::string("(parsed)") : p.error().message;
}

TEST(PolicyParse, PlainSyscallsAllowAnyArguments) {
  auto p = parse_one("read\n  write  \n\n# only a comment\nclose # trailing\n");
  ASSERT_TRUE(p.ok()) << p.error().message;
  ASSERT_EQ(p->rules.size(), 3u);
  EXPECT_EQ(p->rules[0].syscall, "read");
  EXPECT_TRUE(p->rules[0].any.empty());
  EXPECT_EQ(p->rules[0].errno_value, 0);
  EXPECT_EQ(p->rules[1].syscall, "write");
  EXPECT_EQ(p->rules[2].where, "t.policy:5");
  EXPECT_EQ(p->rules[2].comment, "trailing");
}

TEST(PolicyParse, ConditionsAreOrsOfAnds) {
  auto p = parse_one("ioctl: arg1 == 0x10 || arg0 != 3 && arg1 >= 7\n");
  ASSERT_TRUE(p.ok()) << p.error().message;
  const Rule& r = p->rules[0];
  ASSERT_EQ(r.any.size(), 2u);
  EXPECT_EQ(r.any[0].all, (std::vector<Compare>{{1, Compare::Op::kEq, 0x10, 0}}));
  EXPECT_EQ(r.any[1].all,
            (std::vector<Compare>{{0, Compare::Op::kNe, 3, 0}, {1, Compare::Op::kGe, 7, 0}}));
}

TEST(PolicyParse, MaskedComparisonWithNamedConstants) {
  auto p = parse_one("mmap: arg2 & PROT_EXEC == 0\nclone: arg0 & (CLONE_THREAD | CLONE_VM) == CLONE_THREAD|CLONE_VM\n");
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->rules[0].any[0].all[0], (Compare{2, Compare::Op::kMaskedEq, 0, PROT_EXEC}));
  const Compare& c = p->rules[1].any[0].all[0];
  EXPECT_EQ(c.op, Compare::Op::kMaskedEq);
  EXPECT_EQ(c.mask, *constant("CLONE_THREAD") | *constant("CLONE_VM"));
  EXPECT_EQ(c.value, c.mask);
}

TEST(PolicyParse, ReturnErrnoMakesTheCallFail) {
  auto p = parse_one("clone3: return ENOSYS\n");
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->rules[0].errno_value, ENOSYS);
  EXPECT_EQ(format_rule(p->rules[0]), "clone3: return ENOSYS");
}

TEST(PolicyParse, IncludesExpandInPlaceAndOnlyOnce) {
  auto p = parse("role", files({{"role", "include base\ninclude io\nioctl: arg1 == 1\n"},
                                {"io", "include base\nsendmsg\n"},
                                {"base", "read\nwrite\n"}}));
  ASSERT_TRUE(p.ok()) << p.error().message;
  std::vector<std::string> names;
  for (const auto& r : p->rules) names.push_back(r.syscall + "@" + r.where);
  EXPECT_EQ(names, (std::vector<std::string>{"read@base.policy:1", "write@base.policy:2", "sendmsg@io.policy:2",
                                             "ioctl@role.policy:3"}));
}

TEST(PolicyParse, ErrorsNameTheFileAndLine) {
  EXPECT_EQ(error_of("read\nioctl: arg1 == KVM_RUNN\n"),
            "t.policy:2: 'KVM_RUNN' is not a constant moss knows (policies/constants.cc lists them)");
  EXPECT_EQ(error_of("\n\nioctl: arg7 == 1\n"), "t.policy:3: expected an argument (arg0 to arg5), not 'arg7'");
  EXPECT_EQ(error_of("ioctl: arg1 = 1\n"), "t.policy:1: '=' is not a comparison; write '=='");
  EXPECT_EQ(error_of("ioctl: arg1 1\n"),
            "t.policy:1: expected a comparison (==, !=, <, <=, >, >= or '& MASK =='), not '1'");
  EXPECT_EQ(error_of("Read\n"), "t.policy:1: 'Read' is not a system call name (lower case, digits and '_')");
  EXPECT_EQ(error_of("ioctl:\n"), "t.policy:1: nothing after 'ioctl:' (drop the ':' to allow any arguments)");
  EXPECT_EQ(error_of("ioctl: arg1 == 0x1g\n"), "t.policy:1: '0x1g' is not a number (write decimal, or hex as 0x...)");
  EXPECT_EQ(error_of("ioctl: arg1 == 1 arg2\n"), "t.policy:1: expected '||', '&&' or the end of the line, not 'arg2'");
  EXPECT_EQ(error_of("ioctl: arg1 ==\n"), "t.policy:1: a value is missing at the end of the line");
  EXPECT_EQ(error_of("x: return EWHAT\n"),
            "t.policy:1: 'return' needs an errno name moss knows (ENOSYS, EPERM, EACCES, ...), not 'EWHAT'");
  EXPECT_EQ(error_of("include nothing\n"), "t.policy:1: there is no policy called 'nothing'");
  EXPECT_EQ(error_of("mmap: arg2 & 4 == 8\n"), "t.policy:1: the value has bits outside the mask, so it can never match");
  EXPECT_EQ(error_of("x: arg1 > 1 && arg1 < 5\n"),
            "t.policy:1: arg1 appears twice in one '&&' group, which libseccomp cannot express; use '||' or one "
            "masked comparison");
  EXPECT_EQ(error_of("ioctl: (arg1 == 1)\n"), "t.policy:1: expected an argument (arg0 to arg5), not '('");
}

TEST(PolicyParse, RefusesASyscallBothAllowedAndFailed) {
  EXPECT_EQ(error_of("openat\nopenat: return EACCES\n"),
            "t.policy:2: openat is made to fail here but allowed at t.policy:1; a system call gets one action");
}

TEST(PolicyParse, RefusesIncludeCycles) {
  auto p = parse("a", files({{"a", "include b\n"}, {"b", "read\ninclude a\n"}}));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().message, "b.policy:2: the includes go round in a circle (a -> b -> a)");
}

TEST(PolicyParse, FormattedRulesParseBackToTheSameRule) {
  auto p = parse_one(
      "ioctl: arg1 == KVM_RUN || arg1 == 0x10 && arg0 != 2\nmmap: arg2 & PROT_EXEC == 0\nread\nopen: return EACCES\n"
      "x: arg0 < 1 || arg0 <= 2 || arg0 > 3 || arg0 >= 4\n");
  ASSERT_TRUE(p.ok()) << p.error().message;
  for (const auto& r : p->rules) {
    auto again = parse_one(format_rule(r));
    ASSERT_TRUE(again.ok()) << format_rule(r) << ": " << again.error().message;
    EXPECT_EQ(again->rules[0].any, r.any) << format_rule(r);
    EXPECT_EQ(again->rules[0].errno_value, r.errno_value);
  }
}

TEST(PolicyConstants, KnowsKvmAndMemoryNames) {
  EXPECT_EQ(constant("KVM_RUN"), 0xae80u);
  EXPECT_EQ(constant("PROT_EXEC"), static_cast<uint64_t>(PROT_EXEC));
  EXPECT_EQ(constant("KVM_SET_CPUID2"), 0x4008ae90u);
  EXPECT_EQ(constant("KVM_GET_SUPPORTED_CPUID"), 0xc008ae05u);
  EXPECT_FALSE(constant("NOT_A_THING").has_value());
  EXPECT_EQ(errno_value("ENOSYS"), ENOSYS);
}

}  // namespace
}  // namespace moss::policy
