#include "devices/blk/cli.h"

#include <gtest/gtest.h>

#include <vector>

namespace moss::blk {
namespace {

Result<CliOptions> parse(std::vector<const char*> args) { return parse_cli(args); }

void expect_usage_error(std::vector<const char*> args, const std::string& needle) {
  auto r = parse(args);
  ASSERT_FALSE(r.ok()) << needle;
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
}

TEST(BlkCli, SocketPathModeWithEveryOption) {
  auto r = parse({"--socket-path", "/run/blk.sock", "--disk", "/img", "--readonly", "--num-queues", "4", "--serial",
                  "disk-0"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->mode, CliOptions::Mode::kServe);
  EXPECT_EQ(r->socket_path, "/run/blk.sock");
  EXPECT_EQ(r->fd, -1);
  EXPECT_EQ(r->disk, "/img");
  EXPECT_TRUE(r->read_only);
  EXPECT_EQ(r->num_queues, 4u);
  EXPECT_EQ(r->serial, "disk-0");
}

TEST(BlkCli, ConventionSpellingsWithEquals) {
  // The vhost-user spec's conventions, as libvirt/QEMU would pass them.
  auto r = parse({"--fd=3", "--blk-file=/dev/vdb", "--read-only"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->fd, 3);
  EXPECT_EQ(r->disk, "/dev/vdb");
  EXPECT_TRUE(r->read_only);
  EXPECT_EQ(r->num_queues, 1u);
  EXPECT_TRUE(r->serial.empty());
}

TEST(BlkCli, ControlFdIsOptional) {
  auto r = parse({"--fd", "3", "--disk", "/img", "--control-fd", "4"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->control_fd, 4);
  auto s = parse({"--socket-path", "/s", "--disk", "/img", "--control-fd=9"});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->control_fd, 9);
  auto none = parse({"--fd", "3", "--disk", "/img"});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->control_fd, -1);
  EXPECT_NE(usage_text().find("--control-fd N"), std::string::npos);
}

TEST(BlkCli, DiskFdIsTheDiskAndDiskOnlyNamesIt) {
  auto r = parse({"--fd", "3", "--disk-fd", "4"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->disk_fd, 4);
  EXPECT_EQ(r->disk, "");
  r = parse({"--fd", "3", "--disk-fd", "4", "--disk", "/img"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->disk_fd, 4);
  EXPECT_EQ(r->disk, "/img");
  EXPECT_EQ(parse({"--fd", "3"}).ok(), false);
  expect_usage_error({"--fd", "3", "--disk-fd", "x"}, "--disk-fd needs a file descriptor number, not 'x'");
  expect_usage_error({"--fd", "3", "--disk-fd", "3"}, "--disk-fd must be a file descriptor of its own");
}

TEST(BlkCli, PrintCapabilitiesNeedsNothingElse) {
  auto r = parse({"--print-capabilities"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->mode, CliOptions::Mode::kPrintCapabilities);
  EXPECT_NE(capabilities_json().find("\"type\": \"block\""), std::string::npos);
  auto h = parse({"--help"});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->mode, CliOptions::Mode::kHelp);
  EXPECT_NE(usage_text().find("--socket-path"), std::string::npos);
}

TEST(BlkCli, BadUsageIsOneSentence) {
  expect_usage_error({}, "give --socket-path PATH or --fd N");
  expect_usage_error({"--disk", "/img"}, "give --socket-path PATH or --fd N");
  expect_usage_error({"--fd", "3", "--socket-path", "/s", "--disk", "/img"}, "not both");
  expect_usage_error({"--fd", "3"}, "--disk FILE");
  expect_usage_error({"--fd", "three", "--disk", "/img"}, "file descriptor number, not 'three'");
  expect_usage_error({"--fd", "-1", "--disk", "/img"}, "file descriptor number");
  expect_usage_error({"--fd", "3", "--disk"}, "--disk needs a value");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--num-queues", "0"}, "1 to 256, not '0'");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--num-queues", "257"}, "1 to 256");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--num-queues", "2x"}, "1 to 256");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--serial", "123456789012345678901"}, "1 to 20 characters");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--serial", "a b"}, "printable ASCII");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--readonly=yes"}, "takes no value");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--frobnicate"}, "unknown option '--frobnicate'");
  expect_usage_error({"--fd", "3", "/img"}, "unexpected argument '/img'");
  expect_usage_error({"--socket-path=", "--disk", "/i"}, "non-empty path");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--control-fd", "x"}, "--control-fd needs a file descriptor number");
  expect_usage_error({"--fd", "3", "--disk", "/i", "--control-fd", "3"}, "--control-fd and --fd must be different");
}

}  // namespace
}  // namespace moss::blk
