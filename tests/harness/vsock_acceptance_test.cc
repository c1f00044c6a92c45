// Acceptance tests for moss-vsock (issue 5, the worker halves of items 4 and 5), through the
// host-side driver harness: our virtqueue code and vsock driver (vsock_driver.h) as the guest,
// a sealed memfd as guest RAM, a real vhost-user socket to the moss-vsock process, and Unix
// sockets as the host programs. No KVM needed; each test takes well under 5 s.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "devices/vsock/malformed.h"
#include "devices/vsock/state.h"
#include "tests/harness/guest.h"
#include "tests/harness/stream_bytes.h"
#include "tests/harness/vsock_driver.h"
#include "tests/harness/vsock_process.h"

namespace moss::harness {
namespace {

using namespace std::chrono_literals;
using vsock::Op;

constexpr uint64_t kCid = 7;
constexpr uint32_t kGuestService = 52;    // A port the "guest" listens on.
constexpr uint32_t kHostService = 5000;   // A port a host program listens on ("<uds>_5000").

struct TestGuest {
  std::unique_ptr<Guest> guest;
  std::unique_ptr<VsockDriver> driver;
  VsockDriver* operator->() { return driver.get(); }
};

class VsockAcceptance : public ::testing::Test {
 protected:
  void SetUp() override { start_worker({}); }

  void start_worker(std::vector<std::string> extra) {
    if (auto why = VsockProcess::unavailable()) {
#ifdef MOSS_EXPECT_VSOCK_WORKER
      FAIL() << "moss-vsock is part of this build but " << *why;
#endif
      GTEST_SKIP() << "moss-vsock is not available: " << *why;
    }
    worker_.reset();
    VsockProcessOptions o;
    o.guest_cid = kCid;
    o.extra_args = std::move(extra);
    auto w = VsockProcess::start(o);
    ASSERT_TRUE(w.ok()) << w.error().message;
    worker_ = std::move(*w);
  }

  TestGuest connect_guest(VsockDriverOptions o = {}) {
    TestGuest t;
    auto g = Guest::connect(worker_->socket_path(), VsockDriver::guest_options());
    EXPECT_TRUE(g.ok()) << g.error().message << "\nmoss-vsock log:\n" << worker_->log();
    if (!g.ok()) return t;
    t.guest = std::move(*g);
    o.guest_cid = kCid;
    auto d = VsockDriver::create(*t.guest, o);
    EXPECT_TRUE(d.ok()) << d.error().message;
    if (d.ok()) t.driver = std::move(*d);
    return t;
  }

  // A host program connected to guest port `port`, the guest having accepted: the host's
  // socket (its "OK" line read) and the guest's stream.
  std::pair<UniqueFd, ConnKey> host_initiated(TestGuest& g, uint32_t port = kGuestService) {
    auto host = host_connect(worker_->uds_path(), port);
    EXPECT_TRUE(host.ok()) << host.error().message;
    if (!host.ok()) return {};
    auto key = g->accept(port);
    EXPECT_TRUE(key.ok()) << key.error().message;
    if (!key.ok()) return {};
    auto ok = read_line(host->get());
    EXPECT_TRUE(ok.ok()) << ok.error().message;
    EXPECT_EQ(ok.ok() ? *ok : "", "OK " + std::to_string(key->host_port));
    return {std::move(*host), *key};
  }

  // The guest connected to host port `port` from `guest_port`, a host program accepting: the
  // host's socket and the guest's stream.
  std::pair<UniqueFd, ConnKey> guest_initiated(TestGuest& g, uint32_t guest_port, uint32_t port = kHostService) {
    if (!listeners_.contains(port)) {
      auto l = host_listen(worker_->uds_path(), port);
      EXPECT_TRUE(l.ok()) << l.error().message;
      if (!l.ok()) return {};
      listeners_[port] = std::move(*l);
    }
    auto key = g->connect(port, guest_port);
    EXPECT_TRUE(key.ok()) << key.error().message;
    if (!key.ok()) return {};
    auto host = host_accept(listeners_[port].get());
    EXPECT_TRUE(host.ok()) << host.error().message;
    if (!host.ok()) return {};
    return {std::move(*host), *key};
  }

  // The worker is alive and carries a fresh connection from a fresh frontend both ways.
  void expect_serves_a_fresh_guest() {
    ASSERT_TRUE(worker_->alive()) << "moss-vsock " << worker_->describe() << "; log:\n" << worker_->log();
    TestGuest g = connect_guest();
    ASSERT_TRUE(g.driver);
    auto [host, key] = host_initiated(g, 99);
    ASSERT_TRUE(host.valid());
    ASSERT_TRUE(g->write(key, bytes("ping")).ok());
    EXPECT_EQ(text(read_exactly(host.get(), 4)), "ping");
    ASSERT_TRUE(write_all(host.get(), bytes("pong")));
    auto got = g->read_exactly(key, 4);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(text(*got), "pong");
    EXPECT_TRUE(worker_->alive());
  }

  std::unique_ptr<VsockProcess> worker_;
  std::map<uint32_t, UniqueFd> listeners_;
};

TEST_F(VsockAcceptance, ConfigGivesTheGuestCidAndANewFrontendGetsTransportReset) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  EXPECT_EQ(g->config_guest_cid(), kCid);
  EXPECT_TRUE(g.guest->has_feature(feature::kVersion1));
  EXPECT_TRUE(g.guest->has_feature(feature::kEventIdx));
  EXPECT_EQ(g->transport_resets(), 1u) << "create() waited for it";
  (void)g->pump(std::chrono::steady_clock::now() + 100ms);
  EXPECT_EQ(g->transport_resets(), 1u) << "only one";
}

TEST_F(VsockAcceptance, HostInitiatedConnectionCarriesBytesBothWays) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto host = host_connect(worker_->uds_path(), kGuestService);
  ASSERT_TRUE(host.ok()) << host.error().message;
  // The guest sees the REQUEST from the host's CID to its port; the host gets OK only after.
  auto req = g->take_unclaimed([](const VsockPacket& p) { return p.header.op == static_cast<uint16_t>(Op::kRequest); },
                               "REQUEST");
  ASSERT_TRUE(req.ok()) << req.error().message;
  EXPECT_EQ(req->header.src_cid, vsock::kHostCid);
  EXPECT_EQ(req->header.dst_cid, kCid);
  EXPECT_EQ(req->header.dst_port, kGuestService);
  EXPECT_GE(req->header.src_port, vsock::kFirstHostPort);
  EXPECT_GT(req->header.buf_alloc, 0u);
  g->unclaimed().push_front(*req);
  auto key = g->accept(kGuestService);
  ASSERT_TRUE(key.ok());
  auto ok = read_line(host->get());
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(*ok, "OK " + std::to_string(req->header.src_port));

  ASSERT_TRUE(write_all(host->get(), bytes("from the host")));
  auto got = g->read_exactly(*key, 13);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(text(*got), "from the host");
  ASSERT_TRUE(g->write(*key, bytes("from the guest")).ok());
  EXPECT_EQ(text(read_exactly(host->get(), 14)), "from the guest");
  EXPECT_EQ(g->credit_violations(), 0u);
  EXPECT_EQ(g->malformed_from_device(), 0u);
}

TEST_F(VsockAcceptance, OneMebibyteEachWayAtOnceStaysWithinCredit) {
  // The guest grants 64 KiB and reads slowly, so the worker must wait for credit again and
  // again; the guest writes as fast as the worker's credit allows.
  VsockDriverOptions o;
  o.buf_alloc = 64 * 1024;
  TestGuest g = connect_guest(o);
  ASSERT_TRUE(g.driver);
  auto [host, key] = host_initiated(g);
  ASSERT_TRUE(host.valid());
  constexpr size_t kBytes = 1 << 20;
  const auto to_guest = pattern(1, kBytes), to_host = pattern(2, kBytes);
  std::vector<uint8_t> host_got;
  std::thread writer([&, fd = host.get()] { EXPECT_TRUE(write_all(fd, to_guest)); });
  std::thread reader([&, fd = host.get()] { host_got = read_exactly(fd, kBytes); });
  std::vector<uint8_t> guest_got;
  size_t sent = 0;
  while (sent < kBytes || guest_got.size() < kBytes) {
    if (sent < kBytes) {
      size_t n = std::min<size_t>(48 * 1024, kBytes - sent);
      auto w = g->write(key, std::span(to_host).subspan(sent, n));
      ASSERT_TRUE(w.ok()) << w.error().message;
      sent += n;
    }
    if (guest_got.size() < kBytes) {
      auto r = g->read(key, 7000);  // Less than it was sent at once: credit runs short.
      ASSERT_TRUE(r.ok()) << r.error().message;
      ASSERT_FALSE(r->empty()) << "EOF after " << guest_got.size() << " bytes";
      guest_got.insert(guest_got.end(), r->begin(), r->end());
    }
  }
  writer.join();
  reader.join();
  EXPECT_TRUE(guest_got == to_guest) << "guest received different bytes";
  EXPECT_TRUE(host_got == to_host) << "host received " << host_got.size() << " bytes, not the same";
  EXPECT_EQ(g->credit_violations(), 0u) << "the worker sent more than the credit the guest granted";
  EXPECT_EQ(g->malformed_from_device(), 0u);
}

TEST_F(VsockAcceptance, GuestInitiatedConnectionReachesTheHostSocketForItsPort) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto [host, key] = guest_initiated(g, 1025);
  ASSERT_TRUE(host.valid());
  EXPECT_EQ(g->stream(key).peer_buf_alloc, vsock::Limits{}.buf_alloc);
  ASSERT_TRUE(g->write(key, bytes("hello host")).ok());
  EXPECT_EQ(text(read_exactly(host.get(), 10)), "hello host");
  ASSERT_TRUE(write_all(host.get(), bytes("hello guest")));
  auto got = g->read_exactly(key, 11);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(text(*got), "hello guest");
  // A second connection to the same port from another guest port is its own stream.
  auto [host2, key2] = guest_initiated(g, 1026);
  ASSERT_TRUE(host2.valid());
  ASSERT_TRUE(g->write(key2, bytes("two")).ok());
  ASSERT_TRUE(g->write(key, bytes("one")).ok());
  EXPECT_EQ(text(read_exactly(host2.get(), 3)), "two");
  EXPECT_EQ(text(read_exactly(host.get(), 3)), "one");
}

TEST_F(VsockAcceptance, GuestConnectionToAPortNobodyListensOnIsReset) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto key = g->connect(6001, 1025);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.error().err, ECONNREFUSED);
  // A socket file nobody listens on any more is refused the same way.
  { auto stale = host_listen(worker_->uds_path(), 6002); }
  EXPECT_FALSE(g->connect(6002, 1025).ok());
  g = {};
  expect_serves_a_fresh_guest();
}

TEST_F(VsockAcceptance, HostConnectionTheGuestRefusesIsClosedWithoutOk) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto host = host_connect(worker_->uds_path(), 7000);
  ASSERT_TRUE(host.ok());
  ASSERT_TRUE(g->refuse(7000).ok());
  auto line = read_line(host->get());
  EXPECT_FALSE(line.ok()) << "got '" << (line.ok() ? *line : "") << "'";
  // Lines that are not "CONNECT <port>" are closed at once.
  for (const char* bad : {"HELLO\n", "CONNECT x\n", "CONNECT 99999999999\n", "CONNECT 1 2\n"}) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, worker_->uds_path().c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_TRUE(write_all(fd.get(), bytes(bad)));
    EXPECT_TRUE(reads_eof(fd.get())) << bad;
  }
  g = {};
  expect_serves_a_fresh_guest();
}

TEST_F(VsockAcceptance, GuestRstClosesTheHostSocket) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto [host, key] = host_initiated(g);
  ASSERT_TRUE(host.valid());
  ASSERT_TRUE(g->reset(key).ok());
  EXPECT_TRUE(reads_eof(host.get()));
  auto [host2, key2] = guest_initiated(g, 1025);
  ASSERT_TRUE(host2.valid());
  ASSERT_TRUE(g->reset(key2).ok());
  EXPECT_TRUE(reads_eof(host2.get()));
}

TEST_F(VsockAcceptance, GuestShutdownOfSendingGivesTheHostEofAndTheOtherWayGoesOn) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto [host, key] = guest_initiated(g, 1025);
  ASSERT_TRUE(host.valid());
  ASSERT_TRUE(g->write(key, bytes("last words")).ok());
  ASSERT_TRUE(g->shutdown(key, vsock::kShutdownSend).ok());
  EXPECT_EQ(text(read_exactly(host.get(), 10)), "last words");
  EXPECT_TRUE(reads_eof(host.get())) << "the host sees EOF after the guest's last bytes";
  ASSERT_TRUE(write_all(host.get(), bytes("still here")));
  auto got = g->read_exactly(key, 10);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(text(*got), "still here");
  // The host closes too: nothing can flow either way, and the worker ends the connection
  // with an RST (which says SHUTDOWN too).
  host.reset();
  ASSERT_TRUE(g->wait_for([&, k = key] { return g->stream(k).reset; }, "RST").ok());
  EXPECT_TRUE(g->stream(key).eof());
}

TEST_F(VsockAcceptance, HostShutdownOfWritingGivesTheGuestShutdownAndTheOtherWayGoesOn) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto [host, key] = host_initiated(g);
  ASSERT_TRUE(host.valid());
  ASSERT_TRUE(write_all(host.get(), bytes("bye")));
  ASSERT_EQ(::shutdown(host.get(), SHUT_WR), 0);
  auto got = g->read_exactly(key, 16);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(text(*got), "bye") << "then EOF";
  GuestStream& s = g->stream(key);
  EXPECT_EQ(s.peer_shutdown, vsock::kShutdownSend) << "the host still reads: RCV is not set";
  EXPECT_FALSE(s.reset);
  ASSERT_TRUE(g->write(key, bytes("reply")).ok());
  EXPECT_EQ(text(read_exactly(host.get(), 5)), "reply");
  // The guest closes: SHUTDOWN both; the worker finishes with RST and closes the socket.
  ASSERT_TRUE(g->shutdown(key, vsock::kShutdownBoth).ok());
  ASSERT_TRUE(g->wait_for([&, k = key] { return g->stream(k).reset; }, "RST").ok());
  EXPECT_TRUE(reads_eof(host.get()));
}

TEST_F(VsockAcceptance, GuestShutdownOfReceivingMakesHostWritesFail) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto [host, key] = guest_initiated(g, 1025);
  ASSERT_TRUE(host.valid());
  ASSERT_TRUE(g->shutdown(key, vsock::kShutdownRcv).ok());
  // The worker shuts its read side: the host program's writes fail (EPIPE) soon.
  bool failed = false;
  for (int i = 0; i < 200 && !failed; i++) {
    failed = ::send(host.get(), "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE;
    if (!failed) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(failed);
  ASSERT_TRUE(g->write(key, bytes("one way")).ok());
  EXPECT_EQ(text(read_exactly(host.get(), 7)), "one way");
}

TEST_F(VsockAcceptance, MalformedPacketsAreResetAndTheWorkerServesOn) {
  for (const auto& mc : vsock::testing::malformed_cases()) {
    SCOPED_TRACE(mc.name);
    VsockDriverOptions o;
    if (mc.needs_rx_starved) o.rx_buffers = 1;  // Taken by the RESPONSE: the worker can tell the guest nothing.
    TestGuest g = connect_guest(o);
    ASSERT_TRUE(g.driver);
    if (mc.needs_rx_starved) g->set_rx_replenish(false);
    auto [host, key] = guest_initiated(g, 2000);
    ASSERT_TRUE(host.valid());
    if (mc.needs_rx_starved) {
      ASSERT_EQ(g->rx_posted(), 0u);
    }
    vsock::testing::Context ctx{kCid, key, vsock::Limits{}.buf_alloc};
    for (const auto& chain : mc.build(ctx)) ASSERT_TRUE(g->send_chain(chain).ok());
    if (mc.needs_rx_starved) {
      // Only once the worker has read all of it: a buffer posted earlier could carry a
      // CREDIT_UPDATE that makes the last packet legal.
      ASSERT_TRUE(g->wait_sent().ok());
      g->set_rx_replenish(true);
      ASSERT_TRUE(g->post_rx(8).ok());
    }
    if (mc.answered) {
      auto r = g->wait_for([&, k = key] { return g->stream(k).reset; }, "RST");
      EXPECT_TRUE(r.ok()) << r.error().message << "; moss-vsock log:\n" << worker_->log();
    } else {
      (void)g->pump(std::chrono::steady_clock::now() + 200ms);
      EXPECT_FALSE(g->stream(key).reset) << "a packet that cannot be answered gets no RST";
    }
    if (mc.closes) {
      EXPECT_TRUE(drains_to_eof(host.get())) << "the host socket closes with the connection";
    } else {
      ASSERT_TRUE(g->write(key, bytes("on")).ok());
      EXPECT_EQ(text(read_exactly(host.get(), 2)), "on") << "the connection goes on";
    }
    ASSERT_TRUE(worker_->alive()) << worker_->describe() << "; log:\n" << worker_->log();
    EXPECT_EQ(g->malformed_from_device(), 0u);
  }
  expect_serves_a_fresh_guest();
}

TEST_F(VsockAcceptance, BrokenTransmitChainStopsTheQueueNotTheWorker) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  // A descriptor pointing past the end of guest memory, offered raw.
  virtio::DriverQueue& tx = g.guest->queue(vsock::kTxQueue);
  ASSERT_TRUE(tx.write_descriptor(0, {g.guest->ram().size() + 4096, 64, 0, 0}).ok());
  tx.publish_raw(0);
  ASSERT_TRUE(g.guest->kick(vsock::kTxQueue).ok());
  auto r = g.guest->wait_call(vsock::kTxQueue, std::chrono::steady_clock::now() + 3s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().err, kErrRingError) << r.error().message;
  g = {};
  expect_serves_a_fresh_guest();
}

TEST_F(VsockAcceptance, NewFrontendGetsTransportResetAndTheOldConnectionsClose) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto [host, key] = host_initiated(g);
  auto [host2, key2] = guest_initiated(g, 1025);
  ASSERT_TRUE(host.valid() && host2.valid());
  EXPECT_EQ(g->transport_resets(), 1u);
  g = {};  // The frontend leaves (a VMM restart): every connection it carried closes.
  EXPECT_TRUE(reads_eof(host.get()));
  EXPECT_TRUE(reads_eof(host2.get()));
  TestGuest again = connect_guest();
  ASSERT_TRUE(again.driver);
  EXPECT_EQ(again->transport_resets(), 1u) << "the new frontend gets its own";
  // The guest's stale stream gets an RST if it still uses it.
  ASSERT_TRUE(again->send(again->header(key2, Op::kRw, 3), bytes("old")).ok());
  auto rst = again->take_unclaimed(
      [k2 = key2](const VsockPacket& p) { return p.header.op == static_cast<uint16_t>(Op::kRst) && p.header.dst_port == k2.guest_port; },
      "RST for a stale stream");
  EXPECT_TRUE(rst.ok()) << rst.error().message;
  again = {};
  expect_serves_a_fresh_guest();
}

// A restore (issue 13): the frontend saves the worker's state (DEVICE_STATE, every ring
// stopped) and loads it into a fresh worker started with another CID, as a restored VM gets a
// CID lease of its own. The guest sees the new worker's CID in the config, TRANSPORT_RESET on
// the event queue, its old connections gone, and a new connection works.
TEST_F(VsockAcceptance, StateLoadedIntoAWorkerOfAnotherCidGivesTheNewCidAndTransportReset) {
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto [host, key] = host_initiated(g);
  auto [host2, key2] = guest_initiated(g, 1025);
  ASSERT_TRUE(host.valid() && host2.valid());
  ASSERT_EQ(g->transport_resets(), 1u);
  for (uint32_t q = 0; q < g.guest->num_queues(); q++) {
    auto base = g.guest->stop_queue(q);
    ASSERT_TRUE(base.ok()) << base.error().message << "\n" << worker_->log();
  }
  auto saved = g.guest->save_state();
  ASSERT_TRUE(saved.ok()) << saved.error().message << "\n" << worker_->log();
  auto state = vsock::decode_state(*saved);
  ASSERT_TRUE(state.ok()) << state.error().message;
  EXPECT_EQ(state->guest_cid, kCid);

  constexpr uint64_t kNewCid = kCid + 10;
  VsockProcessOptions o;
  o.guest_cid = kNewCid;
  auto fresh = VsockProcess::start(o);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  std::unique_ptr<VsockProcess> b = std::move(*fresh);
  worker_.reset();  // The saved VM's worker ends with it: its host sockets close.
  EXPECT_TRUE(reads_eof(host.get()));
  EXPECT_TRUE(reads_eof(host2.get()));

  auto restored = g.guest->restore(b->socket_path(), *saved);
  ASSERT_TRUE(restored.ok()) << restored.error().message << "\n" << b->log();
  EXPECT_EQ(g->config_guest_cid(), kNewCid) << "the saved CID replaced the worker's";
  auto reset = g->wait_for([&] { return g->transport_resets() >= 2; }, "TRANSPORT_RESET after the load");
  ASSERT_TRUE(reset.ok()) << reset.error().message << "\n" << b->log();
  EXPECT_EQ(g->transport_resets(), 2u);
  // The guest's stale stream gets an RST if it still uses it (sent from the new CID).
  EXPECT_TRUE(g->stream(key2).reset) << "TRANSPORT_RESET did not end the guest's streams";
  g->forget(key2);
  ASSERT_TRUE(g->send(g->header(key2, Op::kRw, 3), bytes("old")).ok());
  auto rst = g->take_unclaimed(
      [k2 = key2](const VsockPacket& p) { return p.header.op == static_cast<uint16_t>(Op::kRst) && p.header.dst_port == k2.guest_port; },
      "RST for a stale stream");
  EXPECT_TRUE(rst.ok()) << rst.error().message;
  // A new connection from a host program reaches the restored guest, both ways.
  auto h = host_connect(b->uds_path(), kGuestService);
  ASSERT_TRUE(h.ok()) << h.error().message;
  auto k = g->accept(kGuestService);
  ASSERT_TRUE(k.ok()) << k.error().message << "\n" << b->log();
  auto ok = read_line(h->get());
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(*ok, "OK " + std::to_string(k->host_port));
  ASSERT_TRUE(g->write(*k, bytes("ping")).ok());
  EXPECT_EQ(text(read_exactly(h->get(), 4)), "ping");
  ASSERT_TRUE(write_all(h->get(), bytes("pong")));
  auto got = g->read_exactly(*k, 4);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(text(*got), "pong");
  EXPECT_TRUE(b->alive()) << b->log();
}

TEST_F(VsockAcceptance, ConnectionLimitRefusesTheNextOne) {
  start_worker({"--max-connections", "2"});
  TestGuest g = connect_guest();
  ASSERT_TRUE(g.driver);
  auto [h1, k1] = guest_initiated(g, 1025);
  auto [h2, k2] = host_initiated(g);
  ASSERT_TRUE(h1.valid() && h2.valid());
  EXPECT_FALSE(g->connect(kHostService, 1026).ok()) << "a third guest connection";
  auto host = host_connect(worker_->uds_path(), kGuestService);
  ASSERT_TRUE(host.ok());
  EXPECT_TRUE(reads_eof(host->get())) << "a third host connection";
  ASSERT_TRUE(g->reset(k1).ok());
  EXPECT_TRUE(reads_eof(h1.get()));
  auto [h3, k3] = guest_initiated(g, 1027);
  EXPECT_TRUE(h3.valid()) << "room again once one closed";
}

}  // namespace
}  // namespace moss::harness
