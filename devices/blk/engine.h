// The virtio-blk I/O engine: disk operations on an io_uring (liburing), completed out of
// order and announced on an eventfd so any event loop can wait for them.
//
// Operations take a caller's tag and report it back exactly once with 0 or -errno. The engine
// hides what the kernel makes awkward:
//   - short transfers and requests of more than IOV_MAX segments continue where they stopped;
//   - with O_DIRECT, a request whose buffers are misaligned goes through an aligned bounce
//     buffer (bounce memory is budgeted: requests over the budget wait for earlier ones);
//   - discard is a hint: if the disk cannot punch holes, it succeeds having done nothing;
//   - write-zeroes falls back from fallocate (PUNCH_HOLE when unmapping is allowed,
//     ZERO_RANGE otherwise) to writing zeroes, remembering what the disk did not support.
//     On a block device those fallocate modes become the kernel's write-zeroes and zero-out.
//
// The ring can do nothing else: it is restricted, before it is enabled, to those operations
// (readv, writev, fsync, fallocate) without SQE flags, and refuses any further registration
// (IORING_REGISTER_RESTRICTIONS). Anything else submitted to it (a socket, an open, a connect)
// fails with -EACCES.
//
// Buffers are borrowed: they must stay valid until their operation is reported (for guest
// memory: drain before unmapping). One thread uses an Engine.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "devices/blk/disk.h"

namespace moss::blk {

class Engine {
 public:
  using Tag = uint64_t;
  // Called once per finished operation with its tag and 0 or -errno.
  using DoneFn = std::function<void(Tag, int)>;

  struct Options {
    uint32_t ring_entries = 256;            // Submission queue size; the CQ is 4x.
    uint64_t bounce_budget = 64ull << 20;   // Bytes of bounce buffers in use at once.
  };

  // The disk must outlive the engine.
  static Result<std::unique_ptr<Engine>> create(const Disk& disk, Options options);
  static Result<std::unique_ptr<Engine>> create(const Disk& disk) { return create(disk, Options{}); }
  // Waits for every operation still in flight (they may write into borrowed buffers).
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Readable (an eventfd counter) when finished operations are waiting for poll().
  int completion_fd() const { return event_fd_.get(); }

  // Queue operations; submit() hands them to the kernel. Offsets and lengths are bytes,
  // multiples of 512, inside the disk: the caller checked them against the guest's request.
  // `sync` makes the operation durable before it completes (write-through, for a driver
  // that did not negotiate flushes).
  void read(Tag tag, uint64_t offset, std::span<const std::span<uint8_t>> buffers);
  void write(Tag tag, uint64_t offset, std::span<const std::span<const uint8_t>> buffers, bool sync);
  // fdatasync: every write completed before the flush is on stable storage when it completes.
  void flush(Tag tag);
  void discard(Tag tag, uint64_t offset, uint64_t length, bool sync);
  void write_zeroes(Tag tag, uint64_t offset, uint64_t length, bool may_unmap, bool sync);
  void submit();

  // Reports finished operations without blocking; returns how many.
  size_t poll(const DoneFn& done);
  // Blocks until at least one operation finishes, then reports like poll(). Needs
  // in_flight() > 0.
  size_t wait(const DoneFn& done);
  // Operations queued, in the kernel, or finished but not yet reported.
  size_t in_flight() const { return ops_live_; }
  uint64_t bounce_in_use() const { return bounce_in_use_; }

  // What the disk turned out not to support (tests and logs).
  bool punch_hole_supported() const { return punch_ok_; }
  bool zero_range_supported() const { return zero_range_ok_; }

  // For tests (engine_test, and moss-blk's MOSS_TEST_PROBE hook inside its sandbox): submits
  // `sqe` as it is on the engine's ring, waits for its completion and returns its result. A
  // compromised worker could do the same; the ring's restrictions are what stop it. Needs
  // in_flight() == 0.
  int submit_raw(const io_uring_sqe& sqe);
  int ring_fd() const { return ring_.ring_fd; }

 private:
  enum class Kind { kRead, kWrite, kFlush, kDiscard, kZeroPunch, kZeroRange, kZeroWrite };
  struct Op;

  Engine(const Disk& disk, Options options);
  Result<void> init();
  Op* new_op(Kind kind, Tag tag, uint64_t offset, uint64_t length, bool sync);
  void start_rw(Op* op);
  bool needs_bounce(const Op& op) const;
  bool try_bounce(Op* op);
  void issue_pending();
  void submit_to_kernel();
  void prep(io_uring_sqe* sqe, Op& op);
  void on_cqe(Op* op, int res);
  void transferred(Op* op, int res);
  void done_or_sync(Op* op);
  void finish(Op* op, int res);
  void reap();
  size_t deliver(const DoneFn& done);

  const Disk& disk_;
  Options options_;
  io_uring ring_{};
  bool ring_ready_ = false;
  UniqueFd event_fd_;
  // Every live operation is owned here; the queues and the kernel (user_data) point at them.
  std::unordered_map<Op*, std::unique_ptr<Op>> ops_;
  std::deque<Op*> to_issue_;        // Ready for an SQE.
  std::deque<Op*> bounce_waiters_;  // Waiting for bounce budget, in arrival order.
  std::vector<std::pair<Tag, int>> finished_;
  bool reaping_ = false;            // Inside reap(): the caller delivers, no need to wake.
  size_t ops_live_ = 0;
  size_t in_kernel_ = 0;
  uint64_t bounce_in_use_ = 0;
  bool punch_ok_ = true;
  bool zero_range_ok_ = true;
  // Read-only zero pages the zero-writing fallback points every iovec at.
  void* zeroes_ = nullptr;
};

}  // namespace moss::blk
