#include "devices/vsock/connection.h"

#include <gtest/gtest.h>

#include <deque>
#include <string>

#include "devices/vsock/hybrid.h"

namespace moss::vsock {
namespace {

constexpr uint64_t kCid = 3;
constexpr uint32_t kGuestPort = 1025;
constexpr uint32_t kServicePort = 5000;

class ConnTest : public ::testing::Test {
 protected:
  void make(Limits l) { table_.emplace(kCid, l); }
  ConnectionTable& t() {
    if (!table_) make({});
    return *table_;
  }

  // A packet from the guest, as parse_packet would give it.
  Packet pkt(Op op, ConnKey k, std::string payload = "", uint32_t flags = 0, uint32_t buf_alloc = 65536,
             uint32_t fwd_cnt = 0) {
    payloads_.push_back(std::move(payload));
    const std::string& s = payloads_.back();
    Packet p;
    p.header = PacketHeader{kCid, kHostCid, k.guest_port, k.host_port, static_cast<uint32_t>(s.size()), kTypeStream,
                            static_cast<uint16_t>(op), flags, buf_alloc, fwd_cnt};
    if (!s.empty()) p.payload.emplace_back(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    return p;
  }
  void send(Op op, ConnKey k, std::string payload = "", uint32_t flags = 0, uint32_t buf_alloc = 65536,
            uint32_t fwd_cnt = 0) {
    t().on_packet(pkt(op, k, std::move(payload), flags, buf_alloc, fwd_cnt), now_);
  }

  // The next packet for the guest, which must be a control packet.
  PacketHeader next_packet(uint32_t room = 4096) {
    auto item = t().next_rx(room);
    EXPECT_TRUE(item);
    if (!item) return {};
    EXPECT_EQ(item->kind, RxItem::Kind::kPacket);
    EXPECT_EQ(item->header.src_cid, kHostCid);
    EXPECT_EQ(item->header.dst_cid, kCid);
    EXPECT_EQ(item->header.type, kTypeStream);
    return item->header;
  }

  std::vector<HostAction> actions() { return t().take_actions(); }

  std::string to_host(ConnKey k) {
    std::string s;
    for (auto piece : t().to_host(k)) s.append(piece.begin(), piece.end());
    return s;
  }

  // A guest-initiated connection to kServicePort, accepted by the host.
  ConnKey guest_connects(uint32_t guest_port = kGuestPort, uint32_t guest_buf = 65536) {
    ConnKey k{guest_port, kServicePort};
    send(Op::kRequest, k, "", 0, guest_buf);
    auto a = actions();
    EXPECT_EQ(a.size(), 1u);
    t().host_connect_result(k, true);
    actions();
    PacketHeader h = next_packet();
    EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kResponse));
    return k;
  }

  std::optional<ConnectionTable> table_;
  std::deque<std::string> payloads_;
  uint64_t now_ = 1000;
};

TEST_F(ConnTest, GuestRequestAsksForAHostConnectAndAnswersResponse) {
  ConnKey k{kGuestPort, kServicePort};
  send(Op::kRequest, k);
  auto a = actions();
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, HostAction::Kind::kConnect);
  EXPECT_EQ(a[0].port, kServicePort);
  EXPECT_FALSE(t().has_rx_work()) << "nothing for the guest before the host answered";
  t().host_connect_result(k, true);
  a = actions();
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, HostAction::Kind::kSync);
  EXPECT_TRUE(t().host_side(k).read);
  PacketHeader h = next_packet();
  EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kResponse));
  EXPECT_EQ(h.src_port, kServicePort);
  EXPECT_EQ(h.dst_port, kGuestPort);
  EXPECT_EQ(h.buf_alloc, Limits{}.buf_alloc);
  EXPECT_EQ(h.fwd_cnt, 0u);
  EXPECT_FALSE(t().next_rx(4096));
  EXPECT_EQ(t().counters().connections, 1u);
}

TEST_F(ConnTest, RefusedHostConnectGetsRstAndForgetsTheConnection) {
  ConnKey k{kGuestPort, kServicePort};
  send(Op::kRequest, k);
  actions();
  t().host_connect_result(k, false);
  EXPECT_EQ(t().size(), 0u);
  PacketHeader h = next_packet();
  EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kRst));
  EXPECT_EQ(h.dst_port, kGuestPort);
  EXPECT_EQ(h.src_port, kServicePort);
  EXPECT_EQ(t().counters().refused_connections, 1u);
}

TEST_F(ConnTest, HostConnectSendsRequestAndWritesOkWhenTheGuestAccepts) {
  auto k = t().host_connect(52, now_);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->guest_port, 52u);
  EXPECT_EQ(k->host_port, kFirstHostPort);
  PacketHeader h = next_packet();
  EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kRequest));
  EXPECT_EQ(h.dst_port, 52u);
  EXPECT_EQ(h.src_port, kFirstHostPort);
  EXPECT_FALSE(t().host_side(*k).read) << "nothing is read from the host before the guest accepts";
  send(Op::kResponse, *k);
  auto a = actions();
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, HostAction::Kind::kSync);
  EXPECT_EQ(to_host(*k), "OK 1073741824\n");
  t().host_written(*k, 14);
  EXPECT_EQ(t().find(*k)->fwd_cnt, 0u) << "our OK line is not guest data";
  EXPECT_TRUE(t().host_side(*k).read);
  EXPECT_FALSE(t().next_rx(4096)) << "no credit update for the OK line";
}

TEST_F(ConnTest, HostPortsAreDistinctPerGuestPort) {
  auto a = t().host_connect(52, now_);
  auto b = t().host_connect(52, now_);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->host_port, b->host_port);
}

TEST_F(ConnTest, GuestRstToARequestClosesTheHostProgram) {
  auto k = t().host_connect(52, now_);
  next_packet();
  send(Op::kRst, *k);
  auto a = actions();
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, HostAction::Kind::kClose);
  EXPECT_EQ(t().size(), 0u);
  EXPECT_FALSE(t().has_rx_work()) << "an RST is never answered";
}

TEST_F(ConnTest, UnansweredRequestTimesOut) {
  make({.connect_timeout_ms = 500});
  auto k = t().host_connect(52, now_);
  next_packet();
  t().expire(now_ + 499);
  EXPECT_EQ(t().size(), 1u);
  t().expire(now_ + 500);
  EXPECT_EQ(t().size(), 0u);
  auto a = actions();
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, HostAction::Kind::kClose);
  EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst)) << "the guest forgets the half-open connection";
}

TEST_F(ConnTest, PacketsWithoutAConnectionGetRstButAnRstDoesNot) {
  ConnKey k{7, 8};
  for (Op op : {Op::kResponse, Op::kRw, Op::kShutdown, Op::kCreditUpdate, Op::kCreditRequest}) {
    send(op, k);
    EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst)) << op_name(static_cast<uint16_t>(op));
  }
  send(Op::kRst, k);
  EXPECT_FALSE(t().has_rx_work());
}

TEST_F(ConnTest, GuestDataGoesToTheHostInOrder) {
  ConnKey k = guest_connects();
  send(Op::kRw, k, "hello ");
  send(Op::kRw, k, "world");
  auto a = actions();
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a[0].kind, HostAction::Kind::kSync);
  EXPECT_EQ(to_host(k), "hello world");
  t().host_written(k, 6);
  EXPECT_EQ(to_host(k), "world");
  EXPECT_EQ(t().find(k)->fwd_cnt, 6u);
  EXPECT_EQ(t().counters().bytes_to_host, 6u);
}

TEST_F(ConnTest, GuestSendingMoreThanItsCreditIsReset) {
  make({.buf_alloc = 1024});
  ConnKey k = guest_connects();
  send(Op::kRw, k, std::string(1000, 'a'));
  send(Op::kRw, k, std::string(24, 'b'));
  EXPECT_EQ(t().size(), 1u) << "exactly the credit is fine";
  send(Op::kRw, k, "c");
  EXPECT_EQ(t().size(), 0u);
  EXPECT_EQ(t().counters().protocol_violations, 1u);
  EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst));
  auto a = actions();
  EXPECT_EQ(a.back().kind, HostAction::Kind::kClose);
}

TEST_F(ConnTest, CreditIsTheFwdCntLastToldNotTheOneNow) {
  make({.buf_alloc = 1024});
  ConnKey k = guest_connects();
  send(Op::kRw, k, std::string(100, 'a'));
  t().host_written(k, 100);  // Written, but the guest has not been told (too little for an update).
  EXPECT_FALSE(t().has_rx_work());
  send(Op::kRw, k, std::string(924, 'b'));
  EXPECT_EQ(t().size(), 1u);
  send(Op::kRw, k, "c");  // The buffer has room, but the guest was never granted it.
  EXPECT_EQ(t().size(), 0u);
}

TEST_F(ConnTest, WrittenBytesAreReportedAsCreditWhenTheGuestRunsShort) {
  make({.buf_alloc = 1024});
  ConnKey k = guest_connects();
  send(Op::kRw, k, std::string(1024, 'a'));
  t().host_written(k, 1024);
  PacketHeader h = next_packet();
  EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kCreditUpdate));
  EXPECT_EQ(h.fwd_cnt, 1024u);
  EXPECT_EQ(h.buf_alloc, 1024u);
  send(Op::kRw, k, std::string(1024, 'b'));
  EXPECT_EQ(t().size(), 1u) << "the whole buffer again";
}

TEST_F(ConnTest, CreditRequestIsAnsweredWithCreditUpdate) {
  ConnKey k = guest_connects();
  send(Op::kCreditRequest, k);
  PacketHeader h = next_packet();
  EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kCreditUpdate));
}

TEST_F(ConnTest, DataToTheGuestNeverExceedsItsCredit) {
  ConnKey k = guest_connects(kGuestPort, 100);
  t().host_readable(k);
  auto item = t().next_rx(4096);
  ASSERT_TRUE(item);
  ASSERT_EQ(item->kind, RxItem::Kind::kData);
  EXPECT_EQ(item->max_bytes, 100u);
  PacketHeader h = t().host_data(k, 60);
  EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kRw));
  EXPECT_EQ(h.len, 60u);
  item = t().next_rx(4096);
  ASSERT_TRUE(item);
  EXPECT_EQ(item->max_bytes, 40u);
  t().host_data(k, 40);
  // Out of credit with data waiting: ask once.
  h = next_packet();
  EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kCreditRequest));
  EXPECT_FALSE(t().next_rx(4096));
  // The guest read 70 bytes.
  send(Op::kCreditUpdate, k, "", 0, 100, 70);
  item = t().next_rx(4096);
  ASSERT_TRUE(item);
  EXPECT_EQ(item->max_bytes, 70u);
  // The room in the buffer bounds it too.
  EXPECT_EQ(t().next_rx(16)->max_bytes, 16u);
}

TEST_F(ConnTest, ShrinkingGuestBufferLeavesNoCredit) {
  ConnKey k = guest_connects(kGuestPort, 100);
  t().host_readable(k);
  t().next_rx(4096);
  t().host_data(k, 80);
  send(Op::kCreditUpdate, k, "", 0, 50, 0);  // 80 in flight, buffer now 50.
  EXPECT_EQ(t().find(k)->peer_credit(), 0u);
}

TEST_F(ConnTest, FwdCntAheadOfWhatWasSentResets) {
  ConnKey k = guest_connects();
  t().host_readable(k);
  t().next_rx(4096);
  t().host_data(k, 10);
  send(Op::kCreditUpdate, k, "", 0, 65536, 11);
  EXPECT_EQ(t().size(), 0u);
  EXPECT_EQ(t().counters().protocol_violations, 1u);
}

TEST_F(ConnTest, AnOlderFwdCntIsIgnored) {
  ConnKey k = guest_connects();
  t().host_readable(k);
  t().next_rx(4096);
  t().host_data(k, 10);
  send(Op::kCreditUpdate, k, "", 0, 65536, 10);
  send(Op::kCreditUpdate, k, "", 0, 65536, 4);  // Built before the one above.
  ASSERT_EQ(t().size(), 1u);
  EXPECT_EQ(t().find(k)->peer_fwd_cnt, 10u);
}

TEST_F(ConnTest, CountersWrapAround) {
  make({.buf_alloc = 1024});
  ConnKey k = guest_connects();
  // Start every counter near 2^32 by moving 2^32 - 512 bytes each way... in big steps.
  Connection& c = const_cast<Connection&>(*t().find(k));
  c.rx_cnt = c.fwd_cnt = c.told_fwd_cnt = 0xffffff00;
  c.tx_cnt = c.peer_fwd_cnt = 0xffffff00;
  send(Op::kRw, k, std::string(1024, 'x'), 0, 65536, 0xffffff00);  // rx_cnt wraps.
  EXPECT_EQ(t().size(), 1u);
  t().host_written(k, 1024);
  EXPECT_EQ(next_packet().fwd_cnt, 0x300u);
  t().host_readable(k);
  t().next_rx(4096);
  t().host_data(k, 0x200);  // tx_cnt wraps.
  send(Op::kCreditUpdate, k, "", 0, 65536, 0x100);
  ASSERT_EQ(t().size(), 1u);
  EXPECT_EQ(t().find(k)->peer_credit(), 65536u) << "all acknowledged";
}

TEST_F(ConnTest, GuestShutdownSendShutsTheHostWriteSideOnceAllIsWritten) {
  ConnKey k = guest_connects();
  send(Op::kRw, k, "tail");
  send(Op::kShutdown, k, "", kShutdownSend);
  EXPECT_FALSE(t().host_side(k).shut_write) << "bytes are still waiting";
  t().host_written(k, 4);
  EXPECT_TRUE(t().host_side(k).shut_write);
  EXPECT_TRUE(t().host_side(k).read) << "the other direction goes on";
  send(Op::kRw, k, "more");
  EXPECT_EQ(t().size(), 0u) << "data after SHUTDOWN(SEND) is a violation";
}

TEST_F(ConnTest, GuestShutdownRcvStopsReadingTheHost) {
  ConnKey k = guest_connects();
  t().host_readable(k);
  send(Op::kShutdown, k, "", kShutdownRcv);
  HostSide s = t().host_side(k);
  EXPECT_TRUE(s.shut_read);
  EXPECT_FALSE(s.read);
  EXPECT_FALSE(t().next_rx(4096)) << "no data for a guest that takes none";
  send(Op::kRw, k, "still sending");
  EXPECT_EQ(to_host(k), "still sending");
}

TEST_F(ConnTest, HostEofSendsShutdownSendAndAFullCloseBoth) {
  ConnKey a = guest_connects(1025);
  ConnKey b = guest_connects(1026);
  t().host_readable(a);
  t().next_rx(4096);
  t().host_eof(a, false);
  PacketHeader h = next_packet();
  EXPECT_EQ(h.op, static_cast<uint16_t>(Op::kShutdown));
  EXPECT_EQ(h.flags, kShutdownSend);
  EXPECT_FALSE(t().host_side(a).read);
  t().host_eof(b, true);
  h = next_packet();
  EXPECT_EQ(h.dst_port, 1026u);
  EXPECT_EQ(h.flags, kShutdownBoth);
  // The guest still sends on a.
  send(Op::kRw, a, "x");
  EXPECT_EQ(to_host(a), "x");
}

TEST_F(ConnTest, ConnectionEndsWithRstWhenNothingCanFlow) {
  ConnKey k = guest_connects();
  t().host_eof(k, false);
  next_packet();  // SHUTDOWN(SEND)
  send(Op::kRw, k, "last");
  send(Op::kShutdown, k, "", kShutdownSend);
  EXPECT_EQ(t().size(), 1u) << "'last' is not written yet";
  actions();
  t().host_written(k, 4);
  EXPECT_EQ(t().size(), 0u);
  EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst));
  auto a = actions();
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a.back().kind, HostAction::Kind::kClose);
}

TEST_F(ConnTest, GuestCloseEndsWithRstAfterTheLastBytes) {
  ConnKey k = guest_connects();
  send(Op::kRw, k, "bye");
  send(Op::kShutdown, k, "", kShutdownBoth);
  EXPECT_EQ(t().size(), 1u);
  t().host_written(k, 3);
  EXPECT_EQ(t().size(), 0u);
  EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst));
}

TEST_F(ConnTest, GuestRstClosesAtOnceAndDropsBufferedBytes) {
  ConnKey k = guest_connects();
  send(Op::kRw, k, "unwritten");
  actions();
  send(Op::kRst, k);
  EXPECT_EQ(t().size(), 0u);
  auto a = actions();
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, HostAction::Kind::kClose);
  EXPECT_FALSE(t().has_rx_work());
}

TEST_F(ConnTest, HostFailureResets) {
  ConnKey k = guest_connects();
  t().host_failed(k);
  EXPECT_EQ(t().size(), 0u);
  EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst));
}

TEST_F(ConnTest, UnexpectedOpsOnAnOpenConnectionReset) {
  for (Op op : {Op::kRequest, Op::kResponse}) {
    ConnKey k = guest_connects();
    send(op, k);
    EXPECT_EQ(t().size(), 0u) << op_name(static_cast<uint16_t>(op));
    EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst));
    actions();
  }
  auto k = t().host_connect(52, now_);
  next_packet();
  send(Op::kRw, *k, "early");  // Before RESPONSE.
  EXPECT_EQ(t().size(), 0u);
}

TEST_F(ConnTest, RefusedPacketsAreAnsweredWithRstAndResetTheirConnection) {
  ConnKey k = guest_connects();
  PacketHeader h = pkt(Op::kRw, k).header;
  h.type = kTypeSeqpacket;
  t().on_refused(Rejection{Refusal::kType, h, "bad type"});
  EXPECT_EQ(t().size(), 0u);
  EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst));
  h.op = static_cast<uint16_t>(Op::kRst);
  t().on_refused(Rejection{Refusal::kType, h, "bad RST"});
  t().on_refused(Rejection{Refusal::kNoHeader, std::nullopt, "short"});
  EXPECT_FALSE(t().has_rx_work());
  EXPECT_EQ(t().counters().refused_packets, 3u);
}

TEST_F(ConnTest, ConnectionLimitRefusesBothWays) {
  make({.max_connections = 2});
  guest_connects(1025);
  guest_connects(1026);
  send(Op::kRequest, {1027, kServicePort});
  EXPECT_TRUE(actions().empty()) << "no host connect beyond the limit";
  EXPECT_EQ(next_packet().op, static_cast<uint16_t>(Op::kRst));
  EXPECT_FALSE(t().host_connect(52, now_).ok());
  EXPECT_EQ(t().size(), 2u);
}

TEST_F(ConnTest, OwedResetsAreBounded) {
  make({.max_queued_resets = 4});
  for (uint32_t i = 0; i < 10; i++) send(Op::kRw, {i, 9}, "x");
  EXPECT_EQ(t().queued_resets(), 4u);
  EXPECT_EQ(t().counters().resets_dropped, 6u);
}

TEST_F(ConnTest, ConnectionsTakeTurns) {
  ConnKey a = guest_connects(1025);
  ConnKey b = guest_connects(1026);
  t().host_readable(a);
  t().host_readable(b);
  std::vector<uint32_t> order;
  for (int i = 0; i < 4; i++) {
    auto item = t().next_rx(4096);
    ASSERT_TRUE(item);
    ASSERT_EQ(item->kind, RxItem::Kind::kData);
    order.push_back(item->key.guest_port);
    t().host_data(item->key, 1);
  }
  EXPECT_EQ(order, (std::vector<uint32_t>{1025, 1026, 1025, 1026}));
}

TEST_F(ConnTest, WouldBlockStopsOfferingDataUntilReadableAgain) {
  ConnKey k = guest_connects();
  t().host_readable(k);
  EXPECT_FALSE(t().host_side(k).read) << "no need to watch a socket known to be readable";
  auto item = t().next_rx(4096);
  ASSERT_TRUE(item);
  t().host_would_block(k);
  EXPECT_TRUE(t().host_side(k).read);
  EXPECT_FALSE(t().next_rx(4096));
}

TEST_F(ConnTest, ABufferWithoutRoomForDataStillCarriesControlPackets) {
  ConnKey k = guest_connects();
  t().host_readable(k);
  EXPECT_FALSE(t().next_rx(0));
  send(Op::kCreditRequest, k);
  EXPECT_EQ(next_packet(0).op, static_cast<uint16_t>(Op::kCreditUpdate));
  EXPECT_EQ(t().next_rx(10)->kind, RxItem::Kind::kData);
}

TEST_F(ConnTest, ClearClosesEverythingWithoutTellingTheGuest) {
  guest_connects(1025);
  auto k = t().host_connect(52, now_);
  send(Op::kRw, {9, 9});  // An RST owed.
  t().clear();
  EXPECT_EQ(t().size(), 0u);
  EXPECT_FALSE(t().has_rx_work());
  auto a = actions();
  size_t closes = 0;
  for (auto& x : a) closes += x.kind == HostAction::Kind::kClose;
  EXPECT_EQ(closes, 2u);
  (void)k;
}

TEST(VsockByteRing, WrapsAndPeeksInTwoPieces) {
  ByteRing r(8);
  EXPECT_EQ(r.allocated(), 0u) << "nothing allocated before use";
  const uint8_t a[] = {1, 2, 3, 4, 5, 6};
  r.push(a);
  r.pop(4);
  const uint8_t b[] = {7, 8, 9, 10, 11, 12};
  r.push(b);
  EXPECT_EQ(r.size(), 8u);
  auto p = r.peek();
  std::vector<uint8_t> got(p[0].begin(), p[0].end());
  got.insert(got.end(), p[1].begin(), p[1].end());
  EXPECT_EQ(got, (std::vector<uint8_t>{5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_FALSE(p[1].empty());
  r.pop(8);
  EXPECT_TRUE(r.empty());
}

}  // namespace
}  // namespace moss::vsock
