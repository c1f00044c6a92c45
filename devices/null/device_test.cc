// moss-null end to end, in one process: the worker runtime serves one end of a socketpair on a
// thread; the test is the frontend and the guest (the harness's Guest and BlkDriver), and the
// broker (describe and stats on a control socketpair).
#include "devices/null/device.h"

#include <sys/socket.h>

#include <gtest/gtest.h>

#include <thread>

#include "devices/worker/runtime.h"
#include "tests/harness/blk_driver.h"
#include "tests/harness/guest.h"

namespace moss::null {
namespace {

constexpr uint64_t kCapacity = 1 << 20;

class NullDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = runtime::Runtime::create(worker_spec({kCapacity, 2}));
    ASSERT_TRUE(w.ok()) << w.error().message;
    worker_ = std::move(*w);
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    thread_ = std::thread([this, fd = sv[1]] { (void)worker_->serve_connection(UniqueFd(fd)); });
    auto g = harness::Guest::adopt(UniqueFd(sv[0]), {.num_queues = 2});
    ASSERT_TRUE(g.ok()) << g.error().message;
    guest_ = std::move(*g);
  }
  void TearDown() override {
    guest_.reset();  // Closes the socket: the worker's serve_connection returns.
    if (thread_.joinable()) thread_.join();
    worker_.reset();
  }

  std::unique_ptr<runtime::Runtime> worker_;
  std::thread thread_;
  std::unique_ptr<harness::Guest> guest_;
};

TEST_F(NullDeviceTest, ShowsADiskOfItsCapacityAndQueues) {
  ASSERT_GE(guest_->config().size(), 36u);
  uint64_t sectors = 0;
  std::memcpy(&sectors, guest_->config().data(), 8);
  EXPECT_EQ(sectors, kCapacity / 512);
  EXPECT_EQ(guest_->backend_queues(), 2u);
}

TEST_F(NullDeviceTest, ReadsGiveZerosWritesSucceedAndBadRequestsGetAStatus) {
  auto d = harness::BlkDriver::create(*guest_, {});
  ASSERT_TRUE(d.ok()) << d.error().message;
  std::vector<uint8_t> buf(8192, 0xee);
  ASSERT_EQ(*d->read(0, buf), blk::kOk);
  EXPECT_EQ(buf, std::vector<uint8_t>(8192, 0));
  std::vector<uint8_t> data(4096, 0x42);
  ASSERT_EQ(*d->write(8, data), blk::kOk);
  ASSERT_EQ(*d->flush(), blk::kOk);
  // Past the end of the disk: IOERR from the parser.
  std::vector<uint8_t> past(1024);
  ASSERT_EQ(*d->read(kCapacity / 512 - 1, past), blk::kIoErr);
  runtime::Stats s = worker_->stats();
  EXPECT_EQ(s.requests, 4u);
  EXPECT_EQ(s.errors, 1u);
  EXPECT_EQ(s.bytes_out, 8192u);
  EXPECT_EQ(s.bytes_in, 4096u);
  EXPECT_EQ(s.in_flight, 0u);
}

}  // namespace
}  // namespace moss::null
