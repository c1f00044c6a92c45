// The vsock device end to end, in one process: a Worker serves one end of a socketpair on its
// own thread (the production event loop and device), the test plays the frontend
// (vhost_user::Frontend), the guest driver (virtio::DriverQueue over a memfd) and the host
// programs (Unix sockets). tests/harness/vsock_acceptance_test.cc covers more, against the
// moss-vsock binary.
#include "devices/vsock/device.h"

#include <poll.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include "devices/virtio/driver.h"
#include "devices/vsock/hybrid.h"
#include "base/unix_socket.h"
#include "devices/vsock/worker.h"
#include "vhost-user/frontend.h"

namespace moss::vsock {
namespace {

using vhost_user::bit;
namespace pf = vhost_user::protocol_feature;

constexpr uint64_t kCid = 42;
constexpr uint64_t kGuestBytes = 4 << 20;
constexpr uint64_t kRingArea = 0x10000;  // Queue q's ring at q * kRingArea.
constexpr uint64_t kHeapStart = 0x100000;
constexpr uint16_t kQueueSize = 64;
constexpr int kWaitMs = 3000;
constexpr uint32_t kRxBuffer = kHeaderSize + 4096;

uint64_t fbit(int n) { return uint64_t{1} << n; }

bool wait_readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

UniqueFd connect_unix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << path << ": " << std::strerror(errno);
  timeval tv{3, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

std::string read_some(int fd, size_t max = 4096) {
  std::string s(max, '\0');
  ssize_t n = ::read(fd, s.data(), s.size());
  s.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return s;
}

struct Received {
  PacketHeader header;
  std::string payload;
};

class VsockDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/moss-vsock-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    uds_ = dir_ + "/v.sock";
    int fd = ::memfd_create("moss-vsock-test-guest", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_GE(fd, 0);
    mem_fd_.reset(fd);
    ASSERT_EQ(::ftruncate(fd, kGuestBytes), 0);
    ASSERT_EQ(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);  // As a VMM shares RAM.
    void* p = ::mmap(nullptr, kGuestBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED);
    host_ = static_cast<uint8_t*>(p);
    mem_ = GuestMemory({GuestRegion{0, kGuestBytes, host_}});
    next_ = kHeapStart;
  }

  void TearDown() override {
    disconnect();
    listener_.reset();
    if (host_ != nullptr) ::munmap(host_, kGuestBytes);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void start_unnegotiated() { start({}, false); }
  void start(Limits limits = {}, bool negotiated = true) {
    DeviceOptions o{cid_, uds_, limits, connect_host_};
    auto w = runtime::Runtime::create(worker_spec(o));
    ASSERT_TRUE(w.ok()) << w.error().message;
    worker_ = std::move(*w);
    auto l = listen_unix(uds_, 64, true);
    ASSERT_TRUE(l.ok()) << l.error().message;
    listener_ = std::move(*l);
    auto h = HostListener::create(*worker_, listener_.get());
    ASSERT_TRUE(h.ok()) << h.error().message;
    hosts_ = std::move(*h);
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fe_.emplace(UniqueFd(sv[0]));
    thread_ = std::thread([this, fd = sv[1]] {
      auto r = worker_->serve_connection(UniqueFd(fd));
      serve_error_ = r.ok() ? "" : r.error().message;
    });
    if (negotiated) negotiate();
  }

  uint64_t cid_ = kCid;  // Set before start(): the CID the worker serves.
  // Set before start(): DeviceOptions::connect_host.
  std::function<Result<UniqueFd>(uint32_t)> connect_host_;

  void disconnect() {
    fe_.reset();
    if (thread_.joinable()) thread_.join();
    hosts_.reset();
    worker_.reset();
  }

  void negotiate(bool fresh_rings = true, std::array<uint16_t, kNumQueues> bases = {}) {
    negotiate_features();
    start_rings(fresh_rings, bases);
  }
  void negotiate_features() {
    auto features = fe_->get_features();
    ASSERT_TRUE(features.ok()) << features.error().message;
    features_ = *features;
    ASSERT_TRUE(fe_->set_protocol_features(bit(pf::kConfig) | bit(pf::kMq) | bit(pf::kReplyAck) | bit(pf::kDeviceState)).ok());
    ASSERT_TRUE(fe_->set_owner().ok());
    ASSERT_TRUE(fe_->set_features(fbit(feature::kVersion1) | fbit(feature::kEventIdx) |
                                  bit(vhost_user::kFeatureProtocolFeatures)).ok());
    vhost_user::MemoryRegion region{0, kGuestBytes, reinterpret_cast<uint64_t>(host_), 0};
    int fd = mem_fd_.get();
    ASSERT_TRUE(fe_->set_mem_table(std::span(&region, 1), std::span(&fd, 1)).ok());
  }
  // Starts the three rings at `bases`: laid out afresh, or (fresh = false) as guest memory holds them.
  void start_rings(bool fresh, std::array<uint16_t, kNumQueues> bases) {
    for (uint32_t q = 0; q < kNumQueues; q++) {
      if (fresh) {
        auto d = virtio::DriverQueue::create(mem_, q * kRingArea, kQueueSize, true, false);
        ASSERT_TRUE(d.ok()) << d.error().message;
        queues_[q].emplace(std::move(*d));
      }
      call_[q].reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      kick_[q].reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      err_[q].reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      const auto& c = queues_[q]->config();
      auto user = [&](uint64_t gpa) { return reinterpret_cast<uint64_t>(host_ + gpa); };
      ASSERT_TRUE(fe_->set_vring_num(q, kQueueSize).ok());
      ASSERT_TRUE(fe_->set_vring_base(q, bases[q]).ok());
      ASSERT_TRUE(fe_->set_vring_addr({q, 0, user(c.desc_gpa), user(c.used_gpa), user(c.avail_gpa), 0}).ok());
      ASSERT_TRUE(fe_->set_vring_call(q, call_[q].get()).ok());
      ASSERT_TRUE(fe_->set_vring_err(q, err_[q].get()).ok());
      ASSERT_TRUE(fe_->set_vring_kick(q, kick_[q].get()).ok());
      ASSERT_TRUE(fe_->set_vring_enable(q, true).ok());
    }
  }

  // Returns once the worker's loop has handled everything that was ready before the call
  // (kicks included): two vhost-user round trips (the first reply can come from the turn that
  // also sees an earlier kick; the second request is read on a later turn).
  void barrier() {
    for (int i = 0; i < 2; i++) ASSERT_TRUE(fe_->get_features().ok());
  }

  // DEVICE_STATE, as a frontend does it.
  Result<std::vector<uint8_t>> save_state() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    MOSS_TRY_VOID(fe_->set_device_state_fd(vhost_user::kTransferSave, wr.get()));
    wr.reset();
    std::vector<uint8_t> blob;
    uint8_t buf[512];
    for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) blob.insert(blob.end(), buf, buf + n);
    MOSS_TRY_VOID(fe_->check_device_state());
    return blob;
  }
  Result<void> load_state(const std::vector<uint8_t>& bytes) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    MOSS_TRY_VOID(fe_->set_device_state_fd(vhost_user::kTransferLoad, rd.get()));
    rd.reset();
    EXPECT_EQ(::write(wr.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    wr.reset();
    return fe_->check_device_state();
  }

  uint64_t alloc(uint64_t n) {
    uint64_t at = next_;
    next_ += (n + 15) & ~uint64_t{15};
    MOSS_ASSERT(next_ <= kGuestBytes);
    return at;
  }

  void kick(uint32_t q) {
    uint64_t one = 1;
    ASSERT_EQ(::write(kick_[q].get(), &one, 8), 8);
  }

  void post_rx(int n, uint32_t size = kRxBuffer) {
    for (int i = 0; i < n; i++) {
      uint64_t gpa = alloc(size);
      virtio::DriverQueue::Buffer b{gpa, size};
      auto head = queues_[kRxQueue]->add_chain({}, std::span(&b, 1));
      ASSERT_TRUE(head.ok());
      rx_buffers_[*head] = gpa;
    }
    kick(kRxQueue);
  }

  void send(const PacketHeader& h, const std::string& payload = "") {
    auto bytes = encode_header(h);
    uint64_t gpa = alloc(kHeaderSize + payload.size());
    ASSERT_TRUE(mem_.write(gpa, bytes).ok());
    if (!payload.empty()) {
      ASSERT_TRUE(mem_.write(gpa + kHeaderSize, std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size())).ok());
    }
    virtio::DriverQueue::Buffer b{gpa, static_cast<uint32_t>(kHeaderSize + payload.size())};
    ASSERT_TRUE(queues_[kTxQueue]->add_chain(std::span(&b, 1), {}).ok());
    kick(kTxQueue);
  }

  PacketHeader guest(Op op, uint32_t guest_port, uint32_t host_port, uint32_t len = 0) {
    return PacketHeader{cid_, kHostCid, guest_port, host_port, len, kTypeStream, static_cast<uint16_t>(op), 0, 65536, 0};
  }

  // The next packet the device put on the receive queue.
  std::optional<Received> receive() {
    for (int waited = 0; waited < kWaitMs; waited += 10) {
      for (;;) {  // Transmit buffers come back as they are read; recycle nothing, just account.
        auto t = queues_[kTxQueue]->pop_used();
        if (!t.ok() || !*t) break;
      }
      auto u = queues_[kRxQueue]->pop_used();
      EXPECT_TRUE(u.ok());
      if (u.ok() && *u) {
        uint64_t gpa = rx_buffers_.at((*u)->first);
        rx_buffers_.erase((*u)->first);
        EXPECT_GE((*u)->second, kHeaderSize);
        std::array<uint8_t, kHeaderSize> raw;
        EXPECT_TRUE(mem_.read(gpa, raw).ok());
        Received r{decode_header(raw), {}};
        EXPECT_EQ((*u)->second, kHeaderSize + r.header.len);
        r.payload.resize(r.header.len);
        EXPECT_TRUE(mem_.read(gpa + kHeaderSize, std::span(reinterpret_cast<uint8_t*>(r.payload.data()), r.payload.size())).ok());
        return r;
      }
      wait_readable(call_[kRxQueue].get(), 10);
      uint64_t count;
      (void)!::read(call_[kRxQueue].get(), &count, 8);
    }
    return std::nullopt;
  }

  Received expect_packet(Op op) {
    auto r = receive();
    EXPECT_TRUE(r) << "no packet; wanted " << op_name(static_cast<uint16_t>(op));
    if (!r) return {};
    EXPECT_EQ(r->header.op, static_cast<uint16_t>(op)) << "got " << op_name(r->header.op);
    EXPECT_EQ(r->header.src_cid, kHostCid);
    EXPECT_EQ(r->header.dst_cid, cid_);
    return *r;
  }

  // On the open connection guest port 1025 <-> host port 5000, whose host end is `host`: the
  // guest's "hello" reaches the host, and the host's "world" the guest.
  void expect_hello_world(int host) {
    send(guest(Op::kRw, 1025, 5000, 5), "hello");
    ASSERT_TRUE(wait_readable(host, 5000));  // The connector's socketpair does not block.
    EXPECT_EQ(read_some(host), "hello");
    ASSERT_EQ(::write(host, "world", 5), 5);
    Received r = expect_packet(Op::kRw);
    EXPECT_EQ(r.payload, "world");
    EXPECT_EQ(r.header.dst_port, 1025u);
  }

  std::string dir_, uds_;
  UniqueFd mem_fd_;
  uint8_t* host_ = nullptr;
  GuestMemory mem_;
  uint64_t next_ = 0;
  std::unique_ptr<runtime::Runtime> worker_;
  std::unique_ptr<HostListener> hosts_;
  UniqueFd listener_;
  std::optional<vhost_user::Frontend> fe_;
  std::thread thread_;
  std::string serve_error_;
  uint64_t features_ = 0;
  std::array<std::optional<virtio::DriverQueue>, kNumQueues> queues_;
  std::array<UniqueFd, kNumQueues> call_, kick_, err_;
  std::map<uint16_t, uint64_t> rx_buffers_;
};

TEST_F(VsockDeviceTest, OffersVersion1EventIdxThreeQueuesAndTheGuestCid) {
  start();
  EXPECT_TRUE(features_ & fbit(feature::kVersion1));
  EXPECT_TRUE(features_ & fbit(feature::kEventIdx));
  EXPECT_FALSE(features_ & fbit(1)) << "no SEQPACKET";
  auto n = fe_->get_queue_num();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3u);
  auto cfg = fe_->get_config(0, 8);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  uint64_t cid;
  std::memcpy(&cid, cfg->data(), 8);
  EXPECT_EQ(cid, kCid);
  EXPECT_FALSE(fe_->get_config(4, 8).ok()) << "past the 8 bytes";
  EXPECT_FALSE(fe_->set_config(0, std::vector<uint8_t>(8, 0)).ok());
}

TEST_F(VsockDeviceTest, SendsTransportResetOnceOnTheEventQueue) {
  start();
  for (int i = 0; i < 2; i++) {
    uint64_t gpa = alloc(4);
    ASSERT_TRUE(mem_.write_obj<uint32_t>(gpa, 0xffffffff).ok());
    virtio::DriverQueue::Buffer b{gpa, 4};
    ASSERT_TRUE(queues_[kEventQueue]->add_chain({}, std::span(&b, 1)).ok());
  }
  kick(kEventQueue);
  ASSERT_TRUE(wait_readable(call_[kEventQueue].get(), kWaitMs));
  auto u = queues_[kEventQueue]->pop_used();
  ASSERT_TRUE(u.ok() && *u);
  EXPECT_EQ((*u)->second, 4u);
  EXPECT_EQ(*mem_.read_obj<uint32_t>(kHeapStart), kEventTransportReset);
  barrier();
  auto again = queues_[kEventQueue]->pop_used();
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again) << "one reset per frontend";
}

TEST_F(VsockDeviceTest, StateMovesToAFreshWorkerWhichResetsTheGuestsConnections) {
  start();
  auto post_event = [&](uint64_t gpa) {
    ASSERT_TRUE(mem_.write_obj<uint32_t>(gpa, 0xffffffff).ok());
    virtio::DriverQueue::Buffer b{gpa, 4};
    ASSERT_TRUE(queues_[kEventQueue]->add_chain({}, std::span(&b, 1)).ok());
    kick(kEventQueue);
  };
  post_event(alloc(4));
  ASSERT_TRUE(wait_readable(call_[kEventQueue].get(), kWaitMs));
  auto first = queues_[kEventQueue]->pop_used();
  ASSERT_TRUE(first.ok() && *first);
  // A guest connection, which the state does not carry.
  auto l = listen_unix(guest_port_path(uds_, 5000), 64, true);
  ASSERT_TRUE(l.ok()) << l.error().message;
  post_rx(4);
  send(guest(Op::kRequest, 1025, 5000));
  expect_packet(Op::kResponse);

  std::array<uint16_t, kNumQueues> bases{};
  for (uint32_t q = 0; q < kNumQueues; q++) {
    auto b = fe_->get_vring_base(q);
    ASSERT_TRUE(b.ok()) << b.error().message;
    bases[q] = static_cast<uint16_t>(*b);
  }
  auto blob = save_state();
  ASSERT_TRUE(blob.ok()) << blob.error().message;
  auto s = decode_state(*blob);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->guest_cid, kCid);
  for (uint32_t q = 0; q < kNumQueues; q++) EXPECT_EQ(s->rings[q], (virtio::RingPosition{true, bases[q], bases[q]})) << q;
  EXPECT_EQ(bases[kEventQueue], 1u);
  disconnect();
  listener_.reset();  // The next worker listens on the same path.

  // A fresh worker refuses what is not a state, and changes nothing.
  start_unnegotiated();
  negotiate_features();
  EXPECT_FALSE(load_state(std::vector<uint8_t>(blob->begin(), blob->end() - 1)).ok());
  auto fresh = save_state();
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  EXPECT_EQ(decode_state(*fresh)->rings[kEventQueue], virtio::RingPosition{}) << "a refused state changed the device";
  // It takes its own, its rings must start where it says, and the guest hears TRANSPORT_RESET.
  ASSERT_TRUE(load_state(*blob).ok());
  auto again = save_state();
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *blob);
  start_rings(false, bases);
  const uint64_t event = alloc(4);
  post_event(event);
  ASSERT_TRUE(wait_readable(call_[kEventQueue].get(), kWaitMs));
  auto reset = queues_[kEventQueue]->pop_used();
  ASSERT_TRUE(reset.ok() && *reset);
  EXPECT_EQ(*mem_.read_obj<uint32_t>(event), kEventTransportReset);
}

// A restored VM gets a CID of its own (two restores of one spore run side by side): the worker
// serves the CID it was started with, whatever CID the saved state was taken under, and the
// TRANSPORT_RESET after the load makes the guest read it again from the config.
TEST_F(VsockDeviceTest, StateOfAnotherCidLoadsAndTheWorkerKeepsItsOwn) {
  start();
  std::array<uint16_t, kNumQueues> bases{};
  for (uint32_t q = 0; q < kNumQueues; q++) {
    auto b = fe_->get_vring_base(q);
    ASSERT_TRUE(b.ok()) << b.error().message;
    bases[q] = static_cast<uint16_t>(*b);
  }
  auto blob = save_state();
  ASSERT_TRUE(blob.ok()) << blob.error().message;
  ASSERT_EQ(decode_state(*blob)->guest_cid, kCid);
  disconnect();
  listener_.reset();

  cid_ = kCid + 5;
  start_unnegotiated();
  negotiate_features();
  auto loaded = load_state(*blob);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  auto cfg = fe_->get_config(0, 8);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  uint64_t cid;
  std::memcpy(&cid, cfg->data(), 8);
  EXPECT_EQ(cid, kCid + 5) << "the saved CID replaced the worker's";
  auto again = save_state();
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(decode_state(*again)->guest_cid, kCid + 5);
  start_rings(false, bases);
  const uint64_t event = alloc(4);
  ASSERT_TRUE(mem_.write_obj<uint32_t>(event, 0xffffffff).ok());
  virtio::DriverQueue::Buffer b{event, 4};
  ASSERT_TRUE(queues_[kEventQueue]->add_chain({}, std::span(&b, 1)).ok());
  kick(kEventQueue);
  ASSERT_TRUE(wait_readable(call_[kEventQueue].get(), kWaitMs));
  auto reset = queues_[kEventQueue]->pop_used();
  ASSERT_TRUE(reset.ok() && *reset);
  EXPECT_EQ(*mem_.read_obj<uint32_t>(event), kEventTransportReset);
  // Packets now carry the new CID: a guest request from it is answered to it.
  auto l = listen_unix(guest_port_path(uds_, 5000), 64, true);
  ASSERT_TRUE(l.ok()) << l.error().message;
  post_rx(4);
  PacketHeader h = guest(Op::kRequest, 1025, 5000);
  send(h);
  Received r = expect_packet(Op::kResponse);
  EXPECT_EQ(r.header.dst_cid, kCid + 5);
}

TEST_F(VsockDeviceTest, GuestConnectsToTheHostListenerAndDataFlowsBothWays) {
  start();
  auto l = listen_unix(guest_port_path(uds_, 5000), 64, true);
  ASSERT_TRUE(l.ok()) << l.error().message;
  post_rx(8);
  send(guest(Op::kRequest, 1025, 5000));
  Received r = expect_packet(Op::kResponse);
  EXPECT_EQ(r.header.src_port, 5000u);
  EXPECT_EQ(r.header.dst_port, 1025u);
  EXPECT_EQ(r.header.buf_alloc, Limits{}.buf_alloc);
  ASSERT_TRUE(wait_readable(l->get(), kWaitMs));
  UniqueFd host(::accept4(l->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(host.valid());
  ASSERT_NO_FATAL_FAILURE(expect_hello_world(host.get()));
}

// moss-vsock --connect-fd: the starter connects for the worker, which touches no path.
TEST_F(VsockDeviceTest, GuestConnectionsGoThroughTheConnectorWhenThereIsOne) {
  std::vector<uint32_t> asked;
  UniqueFd host;
  connect_host_ = [&](uint32_t port) -> Result<UniqueFd> {
    asked.push_back(port);
    if (port != 5000) return make_error("nobody there", ECONNREFUSED);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return make_error("socketpair");
    host.reset(sv[1]);
    return UniqueFd(sv[0]);
  };
  start();
  auto l = listen_unix(guest_port_path(uds_, 5000), 64, true);  // Must not be used.
  ASSERT_TRUE(l.ok()) << l.error().message;
  post_rx(8);
  send(guest(Op::kRequest, 1025, 5000));
  Received r = expect_packet(Op::kResponse);
  EXPECT_EQ(r.header.src_port, 5000u);
  ASSERT_TRUE(host.valid());
  ASSERT_NO_FATAL_FAILURE(expect_hello_world(host.get()));
  EXPECT_FALSE(wait_readable(l->get(), 0)) << "the worker connected to <uds>_5000 itself";
  // A refusal is an RST for the guest.
  send(guest(Op::kRequest, 1026, 6000));
  r = expect_packet(Op::kRst);
  EXPECT_EQ(r.header.src_port, 6000u);
  EXPECT_EQ(asked, (std::vector<uint32_t>{5000, 6000}));
}

TEST_F(VsockDeviceTest, HostProgramGetsOkOnceTheGuestAccepts) {
  start();
  post_rx(8);
  UniqueFd host = connect_unix(uds_);
  ASSERT_EQ(::write(host.get(), "CONNECT 52\nearly", 16), 16);
  Received r = expect_packet(Op::kRequest);
  EXPECT_EQ(r.header.dst_port, 52u);
  EXPECT_EQ(r.header.src_port, kFirstHostPort);
  send(guest(Op::kResponse, 52, r.header.src_port));
  EXPECT_EQ(read_some(host.get(), 14), "OK 1073741824\n");
  r = expect_packet(Op::kRw);
  EXPECT_EQ(r.payload, "early") << "bytes after the CONNECT line are the stream's first";
}

TEST_F(VsockDeviceTest, GuestConnectWithNoHostListenerGetsRst) {
  start();
  post_rx(4);
  send(guest(Op::kRequest, 1025, 6000));
  Received r = expect_packet(Op::kRst);
  EXPECT_EQ(r.header.src_port, 6000u);
  EXPECT_EQ(r.header.dst_port, 1025u);
}

TEST_F(VsockDeviceTest, MalformedPacketGetsRstAndTheDeviceGoesOn) {
  start();
  post_rx(4);
  PacketHeader h = guest(Op::kRw, 1025, 5000);
  h.op = 42;
  send(h);
  expect_packet(Op::kRst);
  h = guest(Op::kRequest, 1025, 6000);
  h.src_cid = kCid + 1;
  send(h);
  expect_packet(Op::kRst);
  send(guest(Op::kRequest, 1025, 6000));  // No listener: still an answer.
  expect_packet(Op::kRst);
}

TEST_F(VsockDeviceTest, ReceiveBufferTooSmallForAHeaderBreaksTheQueue) {
  start();
  post_rx(1, 16);
  send(guest(Op::kRequest, 1025, 6000));  // The RST needs a receive buffer.
  ASSERT_TRUE(wait_readable(err_[kRxQueue].get(), kWaitMs)) << "err eventfd of the receive queue";
}

TEST_F(VsockDeviceTest, HostSocketsCloseWhenTheFrontendLeaves) {
  start();
  auto l = listen_unix(guest_port_path(uds_, 5000), 64, true);
  ASSERT_TRUE(l.ok());
  post_rx(4);
  send(guest(Op::kRequest, 1025, 5000));
  expect_packet(Op::kResponse);
  ASSERT_TRUE(wait_readable(l->get(), kWaitMs));
  UniqueFd host(::accept4(l->get(), nullptr, nullptr, SOCK_CLOEXEC));
  disconnect();
  EXPECT_TRUE(serve_error_.empty()) << serve_error_;
  ASSERT_TRUE(wait_readable(host.get(), kWaitMs));
  EXPECT_EQ(read_some(host.get()), "") << "EOF";
}

}  // namespace
}  // namespace moss::vsock
