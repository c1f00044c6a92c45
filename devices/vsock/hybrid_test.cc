#include "devices/vsock/hybrid.h"

#include <gtest/gtest.h>

namespace moss::vsock {
namespace {

TEST(VsockHybrid, ConnectLineGivesThePort) {
  auto p = parse_connect_line("CONNECT 5000\n");
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(*p, 5000u);
  EXPECT_EQ(*parse_connect_line("CONNECT 0\n"), 0u);
  EXPECT_EQ(*parse_connect_line("CONNECT 4294967295\r\n"), 4294967295u);
  EXPECT_EQ(*parse_connect_line("CONNECT 0000000052\n"), 52u);
}

TEST(VsockHybrid, MalformedConnectLinesAreRefused) {
  for (const char* line : {"", "\n", "CONNECT\n", "CONNECT \n", "CONNECT 4294967296\n", "CONNECT 12345678901\n",
                           "CONNECT -1\n", "CONNECT 12 \n", "CONNECT  12\n", "connect 12\n", "CONNECT 12",
                           "CONNECT 0x10\n", "CONNECT 12\n\n", "GET / HTTP/1.0\n", "CONNECT 1\r\r\n",
                           "CONNECT 1                                   \n"}) {
    auto p = parse_connect_line(line);
    EXPECT_FALSE(p.ok()) << "'" << line << "' gave " << (p.ok() ? *p : 0);
  }
}

TEST(VsockHybrid, OkLineAndGuestPortPath) {
  EXPECT_EQ(ok_line(1073741824), "OK 1073741824\n");
  EXPECT_LE(ok_line(4294967295).size(), kMaxOkLine);
  EXPECT_EQ(guest_port_path("/run/vm/v.sock", 52), "/run/vm/v.sock_52");
}

}  // namespace
}  // namespace moss::vsock
