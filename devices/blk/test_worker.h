// The in-process worker the blk device and control tests drive: a runtime::Runtime for the
// fixture's disk, serving frontend_ over a socketpair on a thread of the test.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "devices/blk/test_guest.h"
#include "devices/blk/worker.h"
#include "devices/worker/runtime.h"

namespace moss::blk::testing {

class InProcessWorkerTest : public GuestDriverTest {
 protected:
  void TearDown() override {
    disconnect();
    GuestDriverTest::TearDown();
  }

  // A worker on the fixture's disk with `c`'s options, serving nothing yet.
  void make_worker(const Conn& c) {
    auto d = Disk::open(disk_path_, c.read_only);
    ASSERT_TRUE(d.ok()) << d.error().message;
    disk_ = std::make_shared<Disk>(std::move(*d));
    auto engine = Engine::create(*disk_);
    ASSERT_TRUE(engine.ok()) << engine.error().message;
    auto w = runtime::Runtime::create(
        worker_spec(disk_, std::shared_ptr<Engine>(std::move(*engine)), DeviceOptions{c.num_queues, c.serial}, disk_path_));
    ASSERT_TRUE(w.ok()) << w.error().message;
    worker_ = std::move(*w);
  }

  // The worker serves a fresh socketpair on a thread (served_ once it returned); frontend_ is
  // the other end, negotiated as `c` says.
  void serve(const Conn& c) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    frontend_.emplace(UniqueFd(sv[0]));
    served_ = false;
    thread_ = std::thread([this, fd = sv[1]] {
      auto r = worker_->serve_connection(UniqueFd(fd));
      serve_result_ = r.ok() ? "" : r.error().message;
      served_ = true;
    });
    negotiate(c);
  }

  // Starts queue 0, completes `n` reads (sectors 0 to n-1) on it and stops it with
  // GET_VRING_BASE, which must say `n`: a quiesced device, as a frontend saves it.
  void read_then_stop(uint32_t n) {
    start_queue(0);
    for (uint32_t i = 0; i < n; i++) read(0, i, 512);
    kick(0);
    wait_used(0, n);
    auto base = fe().get_vring_base(0);
    ASSERT_TRUE(base.ok()) << base.error().message;
    EXPECT_EQ(*base, n);
  }

  // DEVICE_STATE, as a frontend does it: the whole state over a pipe, then CHECK_DEVICE_STATE.
  Result<std::vector<uint8_t>> save_state() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    MOSS_TRY_VOID(fe().set_device_state_fd(vhost_user::kTransferSave, wr.get()));
    wr.reset();
    std::vector<uint8_t> blob;
    uint8_t buf[4096];
    for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) blob.insert(blob.end(), buf, buf + n);
    MOSS_TRY_VOID(fe().check_device_state());
    return blob;
  }
  Result<void> load_state(const std::vector<uint8_t>& bytes) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    MOSS_TRY_VOID(fe().set_device_state_fd(vhost_user::kTransferLoad, rd.get()));
    rd.reset();
    EXPECT_EQ(::write(wr.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    wr.reset();
    return fe().check_device_state();
  }

  // Closes the frontend's socket and waits for the worker to finish with it.
  void disconnect() {
    frontend_.reset();
    finish();
  }

  // Waits for the serving thread, then drops the worker and the disk.
  void finish() {
    if (thread_.joinable()) thread_.join();
    worker_.reset();
    disk_.reset();
  }

  std::shared_ptr<Disk> disk_;
  std::unique_ptr<runtime::Runtime> worker_;
  std::thread thread_;
  std::string serve_result_;
  std::atomic<bool> served_ = false;
};

}  // namespace moss::blk::testing
