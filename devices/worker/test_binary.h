// What every worker binary's test checks of its command line (devices/blk/binary_test.cc,
// devices/vsock/binary_test.cc), running the program as a user or a VMM would.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "tests/support/subprocess.h"

namespace moss::runtime::testing {

// One line, starting with the program name (`name`: "moss-blk"): what a user sees for a mistake.
inline void expect_one_sentence(const std::string& name, const std::string& err) {
  EXPECT_EQ(err.rfind(name + ": ", 0), 0u) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

// --print-capabilities prints `json` (the vhost-user backend program convention) and --help
// the usage of `name`; both exit 0.
inline void expect_capabilities_and_help(const std::string& binary, const std::string& name, const std::string& json) {
  auto r = moss::test::run({binary, "--print-capabilities"}, std::chrono::seconds(10));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, json);
  EXPECT_EQ(r.err, "");
  auto h = moss::test::run({binary, "--help"}, std::chrono::seconds(10));
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("usage: " + name), std::string::npos);
}

// Each command line of `bad` (arguments after the program) exits 2 with one sentence on
// stderr and nothing on stdout.
inline void expect_usage_errors(const std::string& binary, const std::string& name,
                                const std::vector<std::vector<std::string>>& bad) {
  for (std::vector<std::string> args : bad) {
    args.insert(args.begin(), binary);
    auto r = moss::test::run(args, std::chrono::seconds(10));
    EXPECT_EQ(r.exit_code, 2) << args.size();
    expect_one_sentence(name, r.err);
    EXPECT_EQ(r.out, "");
  }
}

}  // namespace moss::runtime::testing
