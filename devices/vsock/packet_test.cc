#include "devices/vsock/packet.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "devices/virtio/test_chain.h"

namespace moss::vsock {
namespace {

constexpr uint64_t kCid = 42;

using virtio::testing::ChainBuilder;

PacketHeader good(Op op, uint32_t len = 0) {
  PacketHeader h;
  h.src_cid = kCid;
  h.dst_cid = kHostCid;
  h.src_port = 1025;
  h.dst_port = 5000;
  h.len = len;
  h.type = kTypeStream;
  h.op = static_cast<uint16_t>(op);
  h.buf_alloc = 65536;
  h.fwd_cnt = 7;
  return h;
}

std::vector<uint8_t> bytes(const PacketHeader& h) {
  auto a = encode_header(h);
  return {a.begin(), a.end()};
}

TEST(VsockPacket, HeaderRoundTripsAndIsLittleEndianAndPacked) {
  PacketHeader h = good(Op::kRw, 3);
  h.src_cid = 0x0102030405060708;
  h.flags = 0xa1b2c3d4;
  auto b = encode_header(h);
  EXPECT_EQ(b[0], 0x08);
  EXPECT_EQ(b[7], 0x01);
  EXPECT_EQ(b[8], kHostCid);
  uint16_t op;
  std::memcpy(&op, &b[30], 2);
  EXPECT_EQ(op, static_cast<uint16_t>(Op::kRw));
  uint32_t fwd;
  std::memcpy(&fwd, &b[40], 4);
  EXPECT_EQ(fwd, 7u);
  EXPECT_EQ(decode_header(b), h);
}

TEST(VsockPacket, RwPayloadIsExactlyLenBytesAcrossDescriptors) {
  ChainBuilder b;
  std::vector<uint8_t> head = bytes(good(Op::kRw, 5));
  head.insert(head.end(), {'a', 'b'});  // The header and the first payload bytes share a buffer.
  b.readable(head).readable({'c', 'd', 'e', 'x', 'y'});  // Slack after len is ignored.
  Parsed p = parse_packet(b.chain, kCid);
  ASSERT_TRUE(p.packet) << p.rejection->message;
  EXPECT_EQ(p.packet->header.len, 5u);
  std::string got;
  for (auto s : p.packet->payload) got.append(s.begin(), s.end());
  EXPECT_EQ(got, "abcde");
}

TEST(VsockPacket, EveryKnownOpParses) {
  for (Op op : {Op::kRequest, Op::kResponse, Op::kRst, Op::kShutdown, Op::kRw, Op::kCreditUpdate, Op::kCreditRequest}) {
    ChainBuilder b;
    b.readable(bytes(good(op)));
    Parsed p = parse_packet(b.chain, kCid);
    EXPECT_TRUE(p.packet) << op_name(static_cast<uint16_t>(op));
  }
}

struct Bad {
  const char* name;
  Refusal want;
  std::function<void(PacketHeader&)> change;
};

TEST(VsockPacket, EveryFieldIsChecked) {
  const Bad cases[] = {
      {"type seqpacket", Refusal::kType, [](PacketHeader& h) { h.type = kTypeSeqpacket; }},
      {"type 0", Refusal::kType, [](PacketHeader& h) { h.type = 0; }},
      {"op invalid", Refusal::kOp, [](PacketHeader& h) { h.op = 0; }},
      {"op 8", Refusal::kOp, [](PacketHeader& h) { h.op = 8; }},
      {"op 0xffff", Refusal::kOp, [](PacketHeader& h) { h.op = 0xffff; }},
      {"src cid host", Refusal::kSrcCid, [](PacketHeader& h) { h.src_cid = kHostCid; }},
      {"src cid high bits", Refusal::kSrcCid, [](PacketHeader& h) { h.src_cid = kCid | (1ull << 32); }},
      {"dst cid guest", Refusal::kDstCid, [](PacketHeader& h) { h.dst_cid = kCid; }},
      {"dst cid any", Refusal::kDstCid, [](PacketHeader& h) { h.dst_cid = 0xffffffff; }},
      {"len past chain", Refusal::kLengthPastChain, [](PacketHeader& h) { h.len = 1; }},
      {"len huge", Refusal::kLengthTooLarge, [](PacketHeader& h) { h.len = 0xffffffff; }},
      {"len just too large", Refusal::kLengthTooLarge, [](PacketHeader& h) { h.len = kMaxPayload + 1; }},
  };
  for (const Bad& c : cases) {
    PacketHeader h = good(Op::kRw);
    c.change(h);
    ChainBuilder b;
    b.readable(bytes(h));
    Parsed p = parse_packet(b.chain, kCid);
    ASSERT_FALSE(p.packet) << c.name;
    EXPECT_EQ(p.rejection->reason, c.want) << c.name << ": " << p.rejection->message;
    ASSERT_TRUE(p.rejection->header) << c.name;
    EXPECT_EQ(*p.rejection->header, h) << c.name;
    EXPECT_FALSE(p.rejection->message.empty());
  }
}

TEST(VsockPacket, ShortHeaderHasNothingToAnswer) {
  for (size_t n : {0, 1, 43}) {
    ChainBuilder b;
    auto h = bytes(good(Op::kRequest));
    h.resize(n);
    if (n > 0) b.readable(h);
    Parsed p = parse_packet(b.chain, kCid);
    ASSERT_FALSE(p.packet);
    EXPECT_EQ(p.rejection->reason, Refusal::kNoHeader);
    EXPECT_FALSE(p.rejection->header);
  }
}

TEST(VsockPacket, HeaderSplitOverDescriptorsIsRead) {
  auto h = bytes(good(Op::kRequest));
  ChainBuilder b;
  b.readable({h.begin(), h.begin() + 10}).readable({h.begin() + 10, h.begin() + 43}).readable({h.begin() + 43, h.end()});
  Parsed p = parse_packet(b.chain, kCid);
  ASSERT_TRUE(p.packet) << p.rejection->message;
  EXPECT_EQ(p.packet->header, good(Op::kRequest));
}

TEST(VsockPacket, WritableBuffersInATransmitChainAreRefused) {
  ChainBuilder b;
  b.readable(bytes(good(Op::kRequest))).writable(16);
  Parsed p = parse_packet(b.chain, kCid);
  ASSERT_FALSE(p.packet);
  EXPECT_EQ(p.rejection->reason, Refusal::kWritableBuffers);
}

TEST(VsockPacket, PayloadOnlyOnRw) {
  ChainBuilder b;
  b.readable(bytes(good(Op::kRequest, 4))).readable({1, 2, 3, 4});
  Parsed p = parse_packet(b.chain, kCid);
  ASSERT_FALSE(p.packet);
  EXPECT_EQ(p.rejection->reason, Refusal::kPayloadOnControl);
}

TEST(VsockPacket, ShutdownFlagsMustBeKnown) {
  PacketHeader h = good(Op::kShutdown);
  h.flags = kShutdownBoth;
  ChainBuilder ok;
  ok.readable(bytes(h));
  EXPECT_TRUE(parse_packet(ok.chain, kCid).packet);
  h.flags = 4;
  ChainBuilder bad;
  bad.readable(bytes(h));
  Parsed p = parse_packet(bad.chain, kCid);
  ASSERT_FALSE(p.packet);
  EXPECT_EQ(p.rejection->reason, Refusal::kShutdownFlags);
}

TEST(VsockPacket, MaximumPayloadIsAccepted) {
  ChainBuilder b;
  b.readable(bytes(good(Op::kRw, kMaxPayload))).readable(std::vector<uint8_t>(kMaxPayload, 1));
  Parsed p = parse_packet(b.chain, kCid);
  ASSERT_TRUE(p.packet) << p.rejection->message;
  EXPECT_EQ(p.packet->payload.size(), 1u);
}

}  // namespace
}  // namespace moss::vsock
