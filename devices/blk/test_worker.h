// The in-process worker the blk device and control tests drive: a runtime::Runtime for the
// fixture's disk, serving frontend_ over a socketpair on a thread of the test.
#pragma once

#include <sys/socket.h>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

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
