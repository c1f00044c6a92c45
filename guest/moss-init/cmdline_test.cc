#include "guest/moss-init/cmdline.h"

#include <gtest/gtest.h>

namespace moss::guest {
namespace {

TEST(Cmdline, NoMossKeysMeansListenOnly) {
  ParseResult r = parse_cmdline("console=ttyS0 reboot=k panic=-1 quiet\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.dial_port, 0u);
}

TEST(Cmdline, DialRoundTrips) {
  EXPECT_EQ(encode_dial(1124), "moss.dial=1124");
  ParseResult r = parse_cmdline("quiet " + encode_dial(1124) + "\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.dial_port, 1124u);
  r = parse_cmdline("\tmoss.dial=4294967295\t\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.dial_port, 4294967295u);
}

TEST(Cmdline, LastOccurrenceWins) {
  ParseResult r = parse_cmdline("moss.dial=1 moss.dial=2");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.dial_port, 2u);
}

TEST(Cmdline, SimilarKeysAreNotOurs) {
  ParseResult r = parse_cmdline("xmoss.dial=zz moss.dialx=zz moss.dial.x=1 moss.argv=7472756500");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.config.dial_port, 0u);
}

TEST(Cmdline, BadPortsAreOneLineErrors) {
  for (const char* bad : {"moss.dial", "moss.dial=", "moss.dial=0", "moss.dial=-1", "moss.dial=4294967296",
                          "moss.dial=12a", "moss.dial=+5", "moss.dial=99999999999999999999"}) {
    ParseResult r = parse_cmdline(bad);
    EXPECT_FALSE(r.ok) << bad;
    EXPECT_NE(r.error.find("moss.dial needs a vsock port"), std::string::npos) << r.error;
    EXPECT_EQ(r.error.find('\n'), std::string::npos) << r.error;
  }
}

}  // namespace
}  // namespace moss::guest
