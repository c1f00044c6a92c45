#include "devices/vsock/hybrid.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

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

TEST(VsockHybrid, ConnectRequestsAndRepliesRoundTripAndWrongSizesAreRefused) {
  auto req = encode_connect_request({7, 1124});
  auto r = decode_connect_request(req);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->seq, 7u);
  EXPECT_EQ(r->port, 1124u);
  auto rep = encode_connect_reply({9, ECONNREFUSED});
  auto p = decode_connect_reply(rep);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->seq, 9u);
  EXPECT_EQ(p->error, ECONNREFUSED);
  EXPECT_EQ(decode_connect_request(std::span<const uint8_t>(req.data(), 7)).error().message,
            "a connect request must be 8 bytes, not 7");
  std::vector<uint8_t> longer(9);
  EXPECT_FALSE(decode_connect_reply(longer).ok());
  auto negative = encode_connect_reply({1, -1});
  EXPECT_EQ(decode_connect_reply(negative).error().message, "a connect reply carries the impossible errno -1");
}

}  // namespace
}  // namespace moss::vsock
