// Backend driven by Frontend over a socketpair, with a fake device recording what it is told.
#include "vhost-user/backend.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include "vhost-user/frontend.h"

namespace moss::vhost_user {
namespace {

using namespace protocol_feature;

constexpr uint64_t kDeviceFeatures = (uint64_t{1} << 32) | (uint64_t{1} << 6);  // VERSION_1, some device bit.
constexpr uint64_t kGuestSize = 1 << 20;
constexpr uint64_t kUserBase = 0x7f1200000000;  // Where the "frontend" claims guest RAM lives.
constexpr std::chrono::milliseconds kStateTransferLimit{1500};

struct FakeDevice : DeviceInterface {
  uint64_t features() const override { return kDeviceFeatures; }
  uint64_t protocol_features() const override { return bit(kConfig) | bit(kInflightShmfd) | bit(kDeviceState); }
  uint32_t num_queues() const override { return 2; }
  uint32_t max_queue_size() const override { return 256; }
  Result<void> set_features(uint64_t f) override {
    acked = f;
    return {};
  }
  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) override {
    if (uint64_t{offset} + size > config.size()) return make_error("config read out of range");
    return std::vector<uint8_t>(config.begin() + offset, config.begin() + offset + size);
  }
  Result<void> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) override {
    if (flags != 0 || uint64_t{offset} + data.size() > config.size()) return make_error("bad config write");
    std::copy(data.begin(), data.end(), config.begin() + offset);
    return {};
  }
  Result<void> on_queue_started(uint32_t index, const Vring& v) override {
    started.push_back(index);
    rings[index] = &v;
    return {};
  }
  uint16_t on_queue_stopped(uint32_t index) override {
    stopped.push_back(index);
    rings[index] = nullptr;
    return next_avail;
  }
  void on_queue_enabled(uint32_t index, bool on) override { enables.push_back({index, on}); }
  void on_memory_changing() override { memory_changes++; }
  void reset() override { resets++; }
  Result<std::vector<uint8_t>> save_state() override { return state; }
  Result<void> load_state(std::span<const uint8_t> bytes) override {
    loaded.assign(bytes.begin(), bytes.end());
    if (loaded.empty()) return make_error("the saved state is empty");
    return {};
  }
  size_t max_state_bytes() const override { return 1 << 20; }

  uint64_t acked = 0;
  std::vector<uint8_t> config = std::vector<uint8_t>(64, 0x5a);
  std::vector<uint32_t> started, stopped;
  std::vector<std::pair<uint32_t, bool>> enables;
  const Vring* rings[2] = {nullptr, nullptr};
  uint16_t next_avail = 42;
  int memory_changes = 0;
  int resets = 0;
  std::vector<uint8_t> state;
  std::vector<uint8_t> loaded;
};

struct WatchEvent {
  int fd;
  uint32_t queue;
  bool add;
};

// Guest RAM as a VMM should share it: a memfd sealed against shrinking (unless `sealed` is
// false, as a careless or hostile frontend might).
UniqueFd make_memfd(const char* name, uint64_t size, bool sealed = true) {
  int fd = ::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  if (sealed) {
    EXPECT_EQ(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  }
  return UniqueFd(fd);
}

UniqueFd make_eventfd() { return UniqueFd(::eventfd(0, EFD_CLOEXEC)); }

// Counts mappings of memfds named `name` in this process.
int mappings_of(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) n += line.find("/memfd:" + name) != std::string::npos;
  return n;
}

// A Backend serving one end of a socketpair on its own thread; a Frontend on the other.
class BackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    backend_sock_.reset(sv[1]);
    frontend_.emplace(UniqueFd(sv[0]));
    backend_ = std::make_unique<Backend>(
        device_,
        [this](int fd, uint32_t q, bool add) {
          std::lock_guard<std::mutex> lock(mu_);
          watches_.push_back({fd, q, add});
        },
        BackendLimits{kStateTransferLimit});
    thread_ = std::thread([this] {
      for (;;) {
        auto r = backend_->serve_one(backend_sock_.get());
        if (!r.ok()) {
          serve_error_ = r.error().message;
          ::shutdown(backend_sock_.get(), SHUT_RDWR);  // The caller's answer to an Error: disconnect.
          return;
        }
        if (!*r) return;
      }
    });
  }
  void TearDown() override {
    stop();
    backend_.reset();  // Its destructor still reports watch removals to watches_.
  }

  // Closes the frontend and waits for the backend thread to see it.
  void stop() {
    frontend_.reset();
    if (thread_.joinable()) thread_.join();
  }

  Frontend& fe() { return *frontend_; }

  // Negotiation as QEMU does it (Frontend::negotiate), with REPLY_ACK so every call is
  // synchronous; without protocol features, there is no REPLY_ACK either.
  void negotiate(bool protocol_features = true) {
    Negotiation want;
    want.use_protocol_features = protocol_features;
    auto n = fe().negotiate(want);
    ASSERT_TRUE(n.ok()) << n.error().message;
  }

  void share_memory(const char* name = "moss-test-guest") {
    guest_ = make_memfd(name, kGuestSize);
    auto res = fe().set_mem_table(MemoryRegion{0, kGuestSize, kUserBase, 0}, guest_.get());
    ASSERT_TRUE(res.ok()) << res.error().message;
  }

  // Configures queue `q` with its rings at guest addresses 0x1000/0x2000/0x3000 (+q*0x10000).
  void start_queue(uint32_t q, uint32_t base = 5) {
    uint64_t off = q * 0x10000;
    call_[q] = make_eventfd();
    kick_[q] = make_eventfd();
    RingSetup r;
    r.index = q;
    r.size = 256;
    r.base = base;
    r.desc = kUserBase + 0x1000 + off;
    r.avail = kUserBase + 0x2000 + off;
    r.used = kUserBase + 0x3000 + off;
    r.call = call_[q].get();
    r.kick = kick_[q].get();
    auto res = fe().start_ring(r);
    ASSERT_TRUE(res.ok()) << res.error().message;
  }

  std::vector<WatchEvent> watches() {
    std::lock_guard<std::mutex> lock(mu_);
    return watches_;
  }

  FakeDevice device_;
  std::unique_ptr<Backend> backend_;
  UniqueFd backend_sock_;
  std::optional<Frontend> frontend_;
  std::thread thread_;
  std::string serve_error_;
  std::mutex mu_;
  std::vector<WatchEvent> watches_;
  UniqueFd guest_;
  UniqueFd call_[2], kick_[2];
};

TEST_F(BackendTest, NegotiatesFeaturesAndProtocolFeatures) {
  auto f = fe().get_features();
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, kDeviceFeatures | bit(kFeatureProtocolFeatures));
  auto pf = fe().get_protocol_features();
  ASSERT_TRUE(pf.ok());
  EXPECT_EQ(*pf, bit(kMq) | bit(kReplyAck) | bit(kResetDevice) | bit(kConfigureMemSlots) | bit(kConfig) |
                     bit(kInflightShmfd) | bit(kDeviceState));
  negotiate();
  EXPECT_TRUE(fe().reply_ack());
  EXPECT_EQ(device_.acked, kDeviceFeatures);  // Bit 30 is the protocol's, not the device's.
  auto q = fe().get_queue_num();
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 2u);
  auto slots = fe().get_max_mem_slots();
  ASSERT_TRUE(slots.ok());
  EXPECT_EQ(*slots, Backend::kMaxMemSlots);
}

TEST_F(BackendTest, RefusesFeaturesItDidNotOffer) {
  negotiate();
  auto r = fe().set_features(uint64_t{1} << 40);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("refused SET_FEATURES"), std::string::npos);
  EXPECT_TRUE(fe().get_features().ok());  // REPLY_ACK: the connection survives a refusal.
}

TEST_F(BackendTest, StartsAConfiguredRingWithTranslatedAddresses) {
  negotiate();
  share_memory();
  start_queue(1);
  ASSERT_EQ(device_.started, std::vector<uint32_t>{1});
  const Vring& v = *device_.rings[1];
  EXPECT_EQ(v.num, 256u);
  EXPECT_EQ(v.base, 5);
  EXPECT_EQ(v.desc_gpa, 0x11000u);
  EXPECT_EQ(v.avail_gpa, 0x12000u);
  EXPECT_EQ(v.used_gpa, 0x13000u);
  EXPECT_FALSE(v.enabled);  // PROTOCOL_FEATURES negotiated: disabled until SET_VRING_ENABLE.
  ASSERT_TRUE(fe().set_vring_enable(1, true).ok());
  EXPECT_TRUE(v.enabled);
  auto w = watches();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].fd, v.kick.get());
  EXPECT_EQ(w[0].queue, 1u);
  EXPECT_TRUE(w[0].add);

  // The call fd is the frontend's eventfd, and guest memory is shared both ways.
  uint64_t one = 1, got = 0;
  ASSERT_EQ(::write(v.call.get(), &one, 8), 8);
  ASSERT_EQ(::read(call_[1].get(), &got, 8), 8);
  ASSERT_TRUE(backend_->memory().write_obj<uint32_t>(0x800, 0xfeedf00d).ok());
  uint32_t seen = 0;
  ASSERT_EQ(::pread(guest_.get(), &seen, 4, 0x800), 4);
  EXPECT_EQ(seen, 0xfeedf00du);
}

TEST_F(BackendTest, GetVringBaseStopsTheRingAndReportsTheDevicesIndex) {
  negotiate();
  share_memory();
  start_queue(0);
  int kick = device_.rings[0]->kick.get();
  auto base = fe().get_vring_base(0);
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(*base, 42u);
  EXPECT_EQ(device_.stopped, std::vector<uint32_t>{0});
  EXPECT_FALSE(backend_->vring(0).started);
  auto w = watches();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[1].fd, kick);
  EXPECT_FALSE(w[1].add);
  // A stopped ring reports its stored base again; restarting needs addresses and a kick anew.
  auto again = fe().get_vring_base(0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 42u);
  start_queue(0, 42);
  EXPECT_EQ(device_.started.size(), 2u);
  EXPECT_EQ(device_.rings[0]->base, 42);
}

TEST_F(BackendTest, WithoutProtocolFeaturesRingsStartEnabled) {
  negotiate(/*protocol_features=*/false);
  EXPECT_FALSE(fe().reply_ack());
  share_memory();
  start_queue(0);
  // No REPLY_ACK: a request with a reply is the barrier (the backend answers in order).
  ASSERT_TRUE(fe().get_features().ok());
  ASSERT_NE(device_.rings[0], nullptr);
  EXPECT_TRUE(device_.rings[0]->enabled);
}

TEST_F(BackendTest, RefusesRingsOutsideGuestMemoryOrOfBadSize) {
  negotiate();
  share_memory();
  EXPECT_FALSE(fe().set_vring_num(0, 100).ok());   // Not a power of two.
  EXPECT_FALSE(fe().set_vring_num(0, 512).ok());   // Above the device's maximum.
  EXPECT_FALSE(fe().set_vring_num(2, 256).ok());   // No such queue.
  EXPECT_FALSE(fe().set_vring_addr(VringAddr{0, 0, 0x1000, 0x2000, 0x3000, 0}).ok());  // Not a frontend address.
  ASSERT_TRUE(fe().set_vring_num(0, 256).ok());
  // The used ring's last bytes fall past the end of the 1 MiB region.
  ASSERT_TRUE(fe().set_vring_addr(VringAddr{0, 0, kUserBase, kUserBase + kGuestSize - 8, kUserBase + 0x2000, 0}).ok());
  auto kick = make_eventfd();
  auto r = fe().set_vring_kick(0, kick.get());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(device_.started.empty());
  EXPECT_FALSE(fe().set_vring_kick(0, -1).ok());  // Polling is not supported.
  EXPECT_TRUE(fe().get_features().ok());
}

TEST_F(BackendTest, AnErrorWithoutReplyAckIsReturnedToTheCaller) {
  ASSERT_TRUE(fe().set_owner().ok());
  ASSERT_TRUE(fe().set_vring_num(7, 256).ok());  // No REPLY_ACK: the send alone succeeds.
  // The backend disconnected: the next call fails, in its send or its receive.
  EXPECT_FALSE(fe().get_features().ok());
  stop();
  EXPECT_NE(serve_error_.find("queue 7"), std::string::npos) << serve_error_;
}

TEST_F(BackendTest, AMalformedMessageEndsTheConnection) {
  uint32_t bad[3] = {1, 0x2, 0};  // Version 2.
  ASSERT_EQ(::write(fe().fd(), bad, sizeof bad), 12);
  stop();
  EXPECT_NE(serve_error_.find("version 2"), std::string::npos) << serve_error_;
}

TEST_F(BackendTest, ReadsAndWritesConfigSpace) {
  negotiate();
  auto c = fe().get_config(4, 8);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*c, std::vector<uint8_t>(8, 0x5a));
  uint8_t data[] = {1, 2, 3};
  ASSERT_TRUE(fe().set_config(10, data).ok());
  EXPECT_EQ(device_.config[11], 2);
  auto bad = fe().get_config(60, 8);  // The device refuses: an empty reply, then an Error here.
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("could not read its config"), std::string::npos);
  EXPECT_FALSE(fe().set_config(0, data, 1).ok());
}

TEST_F(BackendTest, ConfigNeedsTheProtocolFeature) {
  ASSERT_TRUE(fe().set_protocol_features(bit(kReplyAck)).ok());
  EXPECT_FALSE(fe().set_config(0, std::vector<uint8_t>{1}).ok());
}

TEST_F(BackendTest, HandsOutAndTakesBackAnInflightBuffer) {
  negotiate();
  auto in = fe().get_inflight_fd(2, 128);
  ASSERT_TRUE(in.ok()) << in.error().message;
  uint64_t per_queue = Backend::inflight_queue_region_size(128);
  EXPECT_EQ(per_queue, 2112u);  // 16 + 16 * 128, already a multiple of 64.
  EXPECT_EQ(in->info.mmap_size, 2 * per_queue);
  EXPECT_EQ(in->info.mmap_offset, 0u);
  ASSERT_TRUE(in->fd.valid());
  // Shared with the backend: a byte written here is what the device sees.
  ASSERT_EQ(::pwrite(in->fd.get(), "\x01", 1, per_queue), 1);
  InflightArea a = backend_->inflight();
  ASSERT_EQ(a.size, 2 * per_queue);
  EXPECT_EQ(a.data[per_queue], 1);
  EXPECT_EQ(a.num_queues, 2);
  EXPECT_EQ(a.queue_size, 128);

  // After a reconnect the frontend passes the same buffer back.
  ASSERT_TRUE(fe().set_inflight_fd(in->info, in->fd.get()).ok());
  EXPECT_EQ(backend_->inflight().data[per_queue], 1);
  EXPECT_FALSE(fe().get_inflight_fd(3, 128).ok());  // More queues than the device has.
  Inflight small = in->info;
  small.mmap_size = 64;
  EXPECT_FALSE(fe().set_inflight_fd(small, in->fd.get()).ok());
}

TEST_F(BackendTest, SavesTheDeviceStateThroughAPipe) {
  negotiate();
  device_.state.assign(1 << 20, 0);  // Larger than a pipe buffer: the transfer must follow the reply.
  for (size_t i = 0; i < device_.state.size(); i++) device_.state[i] = static_cast<uint8_t>(i * 7);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  auto own = fe().set_device_state_fd(kTransferSave, wr.get());
  ASSERT_TRUE(own.ok()) << own.error().message;
  EXPECT_FALSE(own->valid());  // The backend uses our pipe.
  wr.reset();
  std::vector<uint8_t> got;
  uint8_t buf[65536];
  for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) got.insert(got.end(), buf, buf + n);
  EXPECT_EQ(got, device_.state);
  EXPECT_TRUE(fe().check_device_state().ok());
}

TEST_F(BackendTest, LoadsTheDeviceStateAndReportsFailure) {
  negotiate();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  ASSERT_TRUE(fe().set_device_state_fd(kTransferLoad, rd.get()).ok());
  rd.reset();
  ASSERT_EQ(::write(wr.get(), "state", 5), 5);
  wr.reset();
  ASSERT_TRUE(fe().check_device_state().ok());
  EXPECT_EQ(device_.loaded, (std::vector<uint8_t>{'s', 't', 'a', 't', 'e'}));

  // An empty stream is a state the fake device refuses.
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  rd.reset(p[0]);
  wr.reset(p[1]);
  ASSERT_TRUE(fe().set_device_state_fd(kTransferLoad, rd.get()).ok());
  wr.reset();
  auto r = fe().check_device_state();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("transfer failed"), std::string::npos);
}

TEST_F(BackendTest, RefusesAStateTransferWhileRingsRun) {
  negotiate();
  share_memory();
  start_queue(0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  auto r = fe().set_device_state_fd(kTransferSave, wr.get());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("refused"), std::string::npos);
}

TEST_F(BackendTest, AddsAndRemovesMemoryRegions) {
  negotiate();
  auto a = make_memfd("moss-test-slot", 3 * 4096);
  MemoryRegion r0{0x100000, 4096, 0x5000000, 0};
  MemoryRegion r1{0x200000, 8192, 0x6000000, 4096};  // From offset 4096 of the same file.
  ASSERT_TRUE(fe().add_mem_reg(r0, a.get()).ok());
  ASSERT_TRUE(fe().add_mem_reg(r1, a.get()).ok());
  EXPECT_EQ(mappings_of("moss-test-slot"), 2);
  ASSERT_TRUE(backend_->memory().write_obj<uint64_t>(0x200000, 0x1122334455667788).ok());
  uint64_t seen = 0;
  ASSERT_EQ(::pread(a.get(), &seen, 8, 4096), 8);
  EXPECT_EQ(seen, 0x1122334455667788u);
  EXPECT_FALSE(fe().add_mem_reg(MemoryRegion{0x100800, 4096, 0x7000000, 0}, a.get()).ok());  // Overlaps r0.
  EXPECT_FALSE(fe().add_mem_reg(MemoryRegion{0x900000, 4 * 4096, 0x8000000, 0}, a.get()).ok());  // Past the file's end.
  ASSERT_TRUE(fe().rem_mem_reg(r0).ok());
  EXPECT_EQ(mappings_of("moss-test-slot"), 1);
  EXPECT_FALSE(fe().rem_mem_reg(r0).ok());
  EXPECT_FALSE(backend_->memory().read_obj<uint8_t>(0x100000).ok());
}

TEST_F(BackendTest, RefusesAMemoryTableWhoseFileIsTooShort) {
  negotiate();
  auto small = make_memfd("moss-test-short", 4096);
  auto res = fe().set_mem_table(MemoryRegion{0, kGuestSize, kUserBase, 0}, small.get());
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(mappings_of("moss-test-short"), 0);
}

TEST_F(BackendTest, ANewMemoryTableReplacesTheOldMappings) {
  negotiate();
  share_memory("moss-test-old");
  EXPECT_EQ(mappings_of("moss-test-old"), 1);
  start_queue(0);
  share_memory("moss-test-new");
  EXPECT_EQ(mappings_of("moss-test-old"), 0);
  EXPECT_EQ(mappings_of("moss-test-new"), 1);
  EXPECT_EQ(device_.memory_changes, 1);  // A ring was running: the device was warned.
}

TEST_F(BackendTest, ResetDeviceStopsRingsAndForgetsMemory) {
  negotiate();
  share_memory("moss-test-reset");
  start_queue(0);
  start_queue(1);
  ASSERT_TRUE(fe().reset_device().ok());
  EXPECT_EQ(device_.resets, 1);
  EXPECT_EQ(device_.stopped.size(), 2u);
  EXPECT_EQ(mappings_of("moss-test-reset"), 0);
  EXPECT_EQ(backend_->acked_features(), 0u);
  EXPECT_EQ(backend_->vring(1).num, 0u);
  auto w = watches();
  EXPECT_EQ(std::count_if(w.begin(), w.end(), [](const WatchEvent& e) { return !e.add; }), 2);
}

TEST_F(BackendTest, DestructionStopsRingsBeforeUnmapping) {
  negotiate();
  share_memory("moss-test-dtor");
  start_queue(0);
  stop();
  EXPECT_EQ(mappings_of("moss-test-dtor"), 1);
  backend_.reset();
  EXPECT_EQ(device_.stopped, std::vector<uint32_t>{0});
  EXPECT_EQ(mappings_of("moss-test-dtor"), 0);
  EXPECT_FALSE(watches().back().add);
}

TEST_F(BackendTest, UnsupportedRequestsAreRefused) {
  negotiate();
  auto r = fe().set_vring_err(0, -1);  // Supported: clears the err fd.
  EXPECT_TRUE(r.ok());
  // SET_STATUS: STATUS was never offered.
  ASSERT_TRUE(send_message(fe().fd(), make_request(Request::kSetStatus, uint64_t{0xf}, true)).ok());
  auto rx = receive_message(fe().fd(), Direction::kReply);
  ASSERT_TRUE(rx.ok() && rx->has_value());
  EXPECT_EQ(*(*rx)->message.as<uint64_t>(), 1u);
}


// ---- A hostile frontend (the security review's finding 5, and SET_OWNER first) ----

TEST_F(BackendTest, RequestsThatConfigureTheDeviceBeforeSetOwnerAreRefused) {
  // Queries and the protocol negotiation come first, as QEMU sends them.
  ASSERT_TRUE(fe().get_features().ok());
  auto pf = fe().get_protocol_features();
  ASSERT_TRUE(pf.ok());
  ASSERT_TRUE(fe().set_protocol_features(*pf).ok());
  ASSERT_TRUE(fe().get_queue_num().ok());
  auto r = fe().set_features(kDeviceFeatures | bit(kFeatureProtocolFeatures));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("refused"), std::string::npos) << r.error().message;
  guest_ = make_memfd("moss-test-early", kGuestSize);
  MemoryRegion region{0, kGuestSize, kUserBase, 0};
  int fd = guest_.get();
  EXPECT_FALSE(fe().set_mem_table(region, fd).ok());
  EXPECT_EQ(mappings_of("moss-test-early"), 0);
  // After SET_OWNER the same requests go through.
  ASSERT_TRUE(fe().set_owner().ok());
  EXPECT_TRUE(fe().set_features(kDeviceFeatures | bit(kFeatureProtocolFeatures)).ok());
}

TEST_F(BackendTest, GuestMemoryThatCouldBeTruncatedIsRefused) {
  negotiate();
  auto loose = make_memfd("moss-test-unsealed", kGuestSize, /*sealed=*/false);
  MemoryRegion region{0, kGuestSize, kUserBase, 0};
  int fd = loose.get();
  auto r = fe().set_mem_table(region, fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(mappings_of("moss-test-unsealed"), 0);
  EXPECT_FALSE(fe().add_mem_reg(region, fd).ok());
  EXPECT_EQ(mappings_of("moss-test-unsealed"), 0);
}

TEST_F(BackendTest, TheInflightBufferIsSealedAgainstTheFrontend) {
  negotiate();
  auto in = fe().get_inflight_fd(2, 128);
  ASSERT_TRUE(in.ok()) << in.error().message;
  int seals = ::fcntl(in->fd.get(), F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_NE(::ftruncate(in->fd.get(), 0), 0);  // The attack: truncate it under the backend's mapping.
  EXPECT_EQ(errno, EPERM);
}

TEST_F(BackendTest, KickCallAndErrFdsMustBeEventfds) {
  negotiate();
  share_memory();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  auto mem = make_memfd("moss-test-kick", 4096);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd s0(sv[0]), s1(sv[1]);
  for (int bad : {rd.get(), mem.get(), s0.get()}) {
    auto k = fe().set_vring_kick(0, bad);
    ASSERT_FALSE(k.ok());
    EXPECT_FALSE(fe().set_vring_call(0, bad).ok());
    EXPECT_FALSE(fe().set_vring_err(0, bad).ok());
  }
  EXPECT_TRUE(watches().empty());
  // An eventfd is taken, and the call eventfd is made non-blocking: a saturated counter must
  // not block the worker that signals it.
  start_queue(0);
  EXPECT_TRUE(::fcntl(call_[0].get(), F_GETFL) & O_NONBLOCK);
  uint64_t full = 0xfffffffffffffffeull;
  ASSERT_EQ(::write(call_[0].get(), &full, sizeof full), 8);
  uint64_t one = 1;
  EXPECT_EQ(::write(device_.rings[0]->call.get(), &one, sizeof one), -1);
  EXPECT_EQ(errno, EAGAIN);
}

TEST(ConsumeKick, AnEventfdCountsAndAnythingElseIsAnError) {
  UniqueFd ev(::eventfd(3, EFD_CLOEXEC | EFD_NONBLOCK));
  EXPECT_TRUE(Backend::consume_kick(ev.get(), 0).ok());
  EXPECT_TRUE(Backend::consume_kick(ev.get(), 0).ok());  // Drained: EAGAIN is nothing to do.
  // A pipe whose writer closed is readable forever: polling it again would spin.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd rd(p[0]);
  ::close(p[1]);
  auto r = Backend::consume_kick(rd.get(), 3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the kick fd of queue 3 gave 0 bytes, not an eventfd counter");
}

TEST_F(BackendTest, AStateSaveIntoAPipeNobodyReadsEndsTheConnectionAtTheDeadline) {
  negotiate();
  device_.state.assign(1 << 20, 0x42);  // More than a pipe holds.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(fe().set_device_state_fd(kTransferSave, wr.get()).ok());
  // The backend gives up on its own, and drops us.
  EXPECT_FALSE(fe().check_device_state().ok());
  thread_.join();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, kStateTransferLimit);
  EXPECT_NE(serve_error_.find("did not take the state within 1500 ms"), std::string::npos) << serve_error_;
}

TEST_F(BackendTest, AStateLoadTrickledSlowlyEndsAtOneDeadlineForTheWhole) {
  negotiate();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  ASSERT_TRUE(fe().set_device_state_fd(kTransferLoad, rd.get()).ok());
  // One byte every 400 ms: each read would come well within any per-read time-out.
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 6 && serve_error_.empty(); i++) {
    (void)!::write(wr.get(), "x", 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  thread_.join();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, kStateTransferLimit);
  EXPECT_LT(took, kStateTransferLimit + std::chrono::milliseconds(1500));
  EXPECT_NE(serve_error_.find("did not deliver the state within 1500 ms"), std::string::npos) << serve_error_;
  EXPECT_TRUE(device_.loaded.empty());
}

}  // namespace
}  // namespace moss::vhost_user
