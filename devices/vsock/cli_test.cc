#include "devices/vsock/cli.h"

#include <gtest/gtest.h>

#include <vector>

namespace moss::vsock {
namespace {

Result<CliOptions> parse(std::vector<const char*> args) { return parse_cli(args); }

TEST(VsockCli, TheBrokersCommandLineParses) {
  auto o = parse({"--fd", "3", "--guest-cid", "42", "--uds-path", "/run/moss/vm/vsock.sock"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->mode, CliOptions::Mode::kServe);
  EXPECT_EQ(o->fd, 3);
  EXPECT_EQ(o->guest_cid, 42u);
  EXPECT_EQ(o->uds_path, "/run/moss/vm/vsock.sock");
  EXPECT_EQ(o->max_connections, 256u);
}

TEST(VsockCli, ListenerAndConnectChannelFromTheStarterNeedNoPath) {
  auto o = parse({"--fd", "3", "--guest-cid", "5", "--uds-fd", "4", "--connect-fd", "5"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->uds_fd, 4);
  EXPECT_EQ(o->connect_fd, 5);
  EXPECT_TRUE(o->uds_path.empty());
  // A listener alone still needs a path to connect guest connections to, and fds must differ.
  auto no_path = parse({"--fd", "3", "--guest-cid", "5", "--uds-fd", "4"});
  ASSERT_FALSE(no_path.ok());
  EXPECT_EQ(no_path.error().message, "guest connections go to \"<uds-path>_<port>\": give --uds-path PATH, or --connect-fd N");
  EXPECT_TRUE(parse({"--fd", "3", "--guest-cid", "5", "--uds-fd", "4", "--uds-path", "/tmp/h"}).ok());
  EXPECT_TRUE(parse({"--fd", "3", "--guest-cid", "5", "--connect-fd", "4", "--uds-path", "/tmp/h"}).ok());
  auto same = parse({"--fd", "3", "--guest-cid", "5", "--uds-fd", "4", "--connect-fd", "4"});
  ASSERT_FALSE(same.ok());
  EXPECT_EQ(same.error().message, "--fd, --uds-fd and --connect-fd must be different fds");
}

TEST(VsockCli, SocketPathAndEqualsForms) {
  auto o = parse({"--socket-path=/tmp/v.sock", "--guest-cid=4294967294", "--uds-path=/tmp/h", "--max-connections=8"});
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->socket_path, "/tmp/v.sock");
  EXPECT_EQ(o->guest_cid, 4294967294u);
  EXPECT_EQ(o->max_connections, 8u);
}

TEST(VsockCli, PrintCapabilitiesNeedsNothingElse) {
  auto o = parse({"--print-capabilities"});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->mode, CliOptions::Mode::kPrintCapabilities);
  EXPECT_NE(capabilities_json().find("\"vsock\""), std::string::npos);
}

TEST(VsockCli, BadUsageIsOneSentence) {
  const std::vector<std::vector<const char*>> bad = {
      {},
      {"--fd", "3", "--uds-path", "/tmp/h"},                                   // no CID
      {"--fd", "3", "--guest-cid", "3"},                                       // no uds path
      {"--guest-cid", "3", "--uds-path", "/tmp/h"},                            // no socket
      {"--fd", "3", "--socket-path", "/s", "--guest-cid", "3", "--uds-path", "/h"},
      {"--fd", "3", "--guest-cid", "2", "--uds-path", "/tmp/h"},               // reserved CID
      {"--fd", "3", "--guest-cid", "4294967295", "--uds-path", "/tmp/h"},      // VMADDR_CID_ANY
      {"--fd", "3", "--guest-cid", "x", "--uds-path", "/tmp/h"},
      {"--fd", "-1", "--guest-cid", "3", "--uds-path", "/tmp/h"},
      {"--fd", "3", "--guest-cid", "3", "--uds-path", ""},
      {"--fd", "3", "--guest-cid", "3", "--uds-path", "/tmp/h", "--max-connections", "0"},
      {"--fd", "3", "--guest-cid", "3", "--uds-path", "/tmp/h", "--bogus"},
      {"--fd", "3", "--guest-cid", "3", "--uds-path", "/tmp/h", "extra"},
      {"--socket-path", "/tmp/same", "--guest-cid", "3", "--uds-path", "/tmp/same"},
      {"--print-capabilities=yes"},
      {"--guest-cid"},
  };
  for (const auto& args : bad) {
    auto o = parse(args);
    std::string joined;
    for (auto a : args) joined += std::string(a) + " ";
    ASSERT_FALSE(o.ok()) << joined;
    EXPECT_EQ(o.error().message.find('\n'), std::string::npos) << joined;
  }
  // A uds path that leaves no room for "_<port>" in sun_path.
  std::string long_path(100, 'p');
  EXPECT_FALSE(parse({"--fd", "3", "--guest-cid", "3", "--uds-path", long_path.c_str()}).ok());
}

}  // namespace
}  // namespace moss::vsock
