#include "ipc/channel.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "base/fd.h"
#include "ipc/vcpu.capnp.h"

namespace moss::ipc {
namespace {

TEST(Channel, MessageRoundTripsOverSeqpacket) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<BrokerToVcpu>();
  msg.setVersion(PROTOCOL_VERSION);
  auto start = msg.initStart();
  start.setMemBytes(512ull << 20);
  start.setCpus(2);
  start.setCmdline("console=ttyS0");
  ASSERT_TRUE(send_message(a.get(), mb).ok());
  auto got = receive_message(b.get());
  ASSERT_TRUE(got.ok()) << got.error().message;
  auto root = (*got)->root<BrokerToVcpu>();
  ASSERT_TRUE(root.isStart());
  EXPECT_EQ(root.getStart().getCpus(), 2u);
  EXPECT_EQ(std::string(root.getStart().getCmdline().cStr()), "console=ttyS0");
}

TEST(Channel, EofIsAnEmptyPacket) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  a.reset();
  auto got = receive_message(b.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->get(), nullptr);
}

TEST(DecodePacket, RejectsMalformedFraming) {
  std::vector<uint8_t> short_packet(4, 0);
  EXPECT_FALSE(decode_packet(short_packet).ok());
  std::vector<uint8_t> unaligned(12, 0);
  EXPECT_FALSE(decode_packet(unaligned).ok());
  // One segment claiming 100 words in a 16-byte packet.
  std::vector<uint8_t> lying = {0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_FALSE(decode_packet(lying).ok());
  std::vector<uint8_t> many_segments = {255, 255, 255, 255, 0, 0, 0, 0};
  EXPECT_FALSE(decode_packet(many_segments).ok());
}

TEST(DecodePacket, AcceptsAnEmptyStruct) {
  std::vector<uint8_t> ok = {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  auto p = decode_packet(ok);
  ASSERT_TRUE(p.ok()) << p.error().message;
}

}  // namespace
}  // namespace moss::ipc
