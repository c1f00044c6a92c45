#include "devices/blk/engine.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "base/log.h"
#include "base/syscall.h"
#include "devices/blk/request.h"

namespace moss::blk {
namespace {

constexpr size_t kIovMax = IOV_MAX;           // preadv/pwritev refuse more segments.
constexpr uint64_t kZeroChunk = 1ull << 20;   // The read-only zero buffer.
constexpr size_t kZeroIovs = 16;              // Up to 16 MiB of zeroes per write.
constexpr uint64_t kBounceAlign = 4096;       // Satisfies any dio_mem_align up to a page.
constexpr int kPunchHole = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
constexpr int kZeroRange = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
// Every operation prep() submits, and all the ring allows (Engine::init).
constexpr uint8_t kRingOps[] = {IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC, IORING_OP_FALLOCATE};

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// io_uring failing on its own ring is our bug or a broken kernel: operations may be in flight
// into guest memory, so there is no safe way to go on.
[[noreturn]] void ring_failed(const char* what, int err) {
  LOG_ERROR("%s", errno_message(std::string("io_uring ") + what + " failed", err).c_str());
  std::abort();
}

// io_uring_register(2) itself: Debian 12's liburing 2.3 declares io_uring_register_restrictions
// and io_uring_enable_rings but does not export them from its shared library.
int ring_register(io_uring* ring, unsigned opcode, const void* arg, unsigned nr) {
  long r = ::syscall(SYS_io_uring_register, ring->ring_fd, opcode, arg, nr);
  return r < 0 ? -errno : 0;
}

bool transient(int res) { return res == -EAGAIN || res == -EINTR || res == -EBUSY; }

}  // namespace

struct Engine::Op {
  Kind kind;
  Tag tag;
  uint64_t offset;  // Of the next transfer.
  uint64_t left;    // Bytes still to transfer, zero or deallocate.
  bool sync;        // Durable before completion (RWF_DSYNC, or a final fdatasync).
  std::vector<iovec> iov;  // Read/write: the segments; [iov_pos] is the first not done.
  size_t iov_pos = 0;
  uint8_t* bounce = nullptr;
  uint64_t bounce_size = 0;
  std::vector<std::span<uint8_t>> copy_back;  // A bounced read's real destination.
};

Engine::Engine(const Disk& disk, Options options) : disk_(disk), options_(options) {}

Result<std::unique_ptr<Engine>> Engine::create(const Disk& disk, Options options) {
  MOSS_ASSERT(options.ring_entries >= 1 && options.ring_entries <= 4096);
  std::unique_ptr<Engine> e(new Engine(disk, options));
  MOSS_TRY_VOID(e->init());
  return e;
}

Result<void> Engine::init() {
  MOSS_TRY(int efd, MOSS_SYS(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
  event_fd_.reset(efd);
  // TODO(perf): IORING_SETUP_COOP_TASKRUN / SINGLE_ISSUER once the worker's threading is
  // settled (SINGLE_ISSUER binds the ring to the creating thread).
  //
  // Operations on a ring are not system calls: no seccomp filter sees them, and an
  // unrestricted ring can open files, make sockets (AF_VSOCK, which no network namespace
  // confines) or connect. So the ring starts disabled, gets its eventfd, is restricted to the
  // operations prep() uses with no registration allowed afterwards, and only then is enabled.
  // A compromised worker gets -EACCES for anything else; blk.policy forbids io_uring_setup and
  // io_uring_register, so it cannot make or change a ring either (the worker makes this one
  // before its filter loads). What is left, reading, writing, syncing and allocating an fd it
  // holds, its policy allows as system calls anyway. (The disk is not a fixed file: the kernel
  // drops a ring's fixed files only some time after the ring is closed, which would keep the
  // disk's lock, base/disk_lock.h, after the worker has gone.)
  io_uring_params p{};
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
  p.cq_entries = options_.ring_entries * 4;
  int r = io_uring_queue_init_params(options_.ring_entries, &ring_, &p);
  if (r < 0) {
    return sys_error_code(-r, "create", "an io_uring (is it disabled by kernel.io_uring_disabled or a seccomp policy?)");
  }
  ring_ready_ = true;
  // Without NODROP a full completion queue loses completions, and with them requests.
  if (!(p.features & IORING_FEAT_NODROP)) return make_error("this kernel's io_uring can drop completions; moss needs Linux 5.5 or later");
  r = io_uring_register_eventfd(&ring_, event_fd_.get());
  if (r < 0) return sys_error_code(-r, "register an eventfd with the io_uring");
  std::vector<io_uring_restriction> rules;
  for (uint8_t op : kRingOps) {
    io_uring_restriction x{};
    x.opcode = IORING_RESTRICTION_SQE_OP;
    x.sqe_op = op;
    rules.push_back(x);
  }
  // No IORING_RESTRICTION_REGISTER_OP: once enabled, every io_uring_register is refused. No
  // SQE flags are allowed either (links, drains, async, buffer selection: prep() uses none).
  r = ring_register(&ring_, IORING_REGISTER_RESTRICTIONS, rules.data(), static_cast<unsigned>(rules.size()));
  if (r < 0) {
    return sys_error_code(-r, "restrict the io_uring (moss needs Linux 5.10 or later)");
  }
  r = ring_register(&ring_, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  if (r < 0) return sys_error_code(-r, "enable the io_uring");
  // Real pages made read-only: the zero-writing fallback can point thousands of iovecs at
  // them and nothing can ever make them non-zero.
  void* z = ::mmap(nullptr, kZeroChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (z == MAP_FAILED) return sys_error("map the zero buffer");
  zeroes_ = z;
  std::memset(zeroes_, 0, kZeroChunk);
  MOSS_TRY_VOID(MOSS_SYS(::mprotect(zeroes_, kZeroChunk, PROT_READ)));
  return {};
}

Engine::~Engine() {
  if (ring_ready_) {
    while (ops_live_ > 0) wait([](Tag, int) {});
    io_uring_queue_exit(&ring_);
  }
  if (zeroes_ != nullptr) ::munmap(zeroes_, kZeroChunk);
}

Engine::Op* Engine::new_op(Kind kind, Tag tag, uint64_t offset, uint64_t length, bool sync) {
  // The device checked every range against the disk: anything else is our bug.
  MOSS_ASSERT(offset % kSectorSize == 0 && length % kSectorSize == 0);
  MOSS_ASSERT(offset <= disk_.info().size_bytes && length <= disk_.info().size_bytes - offset);
  auto owned = std::make_unique<Op>(Op{kind, tag, offset, length, sync, {}, 0, nullptr, 0, {}});
  Op* op = owned.get();
  ops_.emplace(op, std::move(owned));
  ++ops_live_;
  return op;
}

void Engine::read(Tag tag, uint64_t offset, std::span<const std::span<uint8_t>> buffers) {
  uint64_t total = 0;
  for (auto b : buffers) total += b.size();
  Op* op = new_op(Kind::kRead, tag, offset, total, false);
  op->iov.reserve(buffers.size());
  for (auto b : buffers) op->iov.push_back(iovec{b.data(), b.size()});
  start_rw(op);
}

void Engine::write(Tag tag, uint64_t offset, std::span<const std::span<const uint8_t>> buffers, bool sync) {
  MOSS_ASSERT(!disk_.info().read_only);
  uint64_t total = 0;
  for (auto b : buffers) total += b.size();
  Op* op = new_op(Kind::kWrite, tag, offset, total, sync);
  op->iov.reserve(buffers.size());
  // writev only reads through the iovec; iovec just has no const flavour.
  for (auto b : buffers) op->iov.push_back(iovec{const_cast<uint8_t*>(b.data()), b.size()});
  start_rw(op);
}

void Engine::flush(Tag tag) { to_issue_.push_back(new_op(Kind::kFlush, tag, 0, 0, false)); }

void Engine::discard(Tag tag, uint64_t offset, uint64_t length, bool sync) {
  MOSS_ASSERT(!disk_.info().read_only);
  Op* op = new_op(Kind::kDiscard, tag, offset, length, sync);
  // Discard is a hint the guest cannot check: on a disk that cannot punch holes it is done.
  if (!punch_ok_ || length == 0) return finish(op, 0);
  to_issue_.push_back(op);
}

void Engine::write_zeroes(Tag tag, uint64_t offset, uint64_t length, bool may_unmap, bool sync) {
  MOSS_ASSERT(!disk_.info().read_only);
  Kind kind = may_unmap && punch_ok_ ? Kind::kZeroPunch : zero_range_ok_ ? Kind::kZeroRange : Kind::kZeroWrite;
  Op* op = new_op(kind, tag, offset, length, sync);
  if (length == 0) return finish(op, 0);
  to_issue_.push_back(op);
}

void Engine::submit() { issue_pending(); }

// ---- Reads and writes ----

bool Engine::needs_bounce(const Op& op) const {
  if (!disk_.info().direct) return false;
  const uint64_t mem_align = disk_.info().dio_mem_align;
  for (const iovec& v : op.iov) {
    // Addresses to dio_mem_align, segment lengths to the offset alignment (512 for a disk we
    // opened O_DIRECT: disk.cc refuses anything coarser).
    if (reinterpret_cast<uintptr_t>(v.iov_base) % mem_align != 0 || v.iov_len % kSectorSize != 0) return true;
  }
  return false;
}

void Engine::start_rw(Op* op) {
  if (op->left == 0) return finish(op, 0);
  if (needs_bounce(*op)) {
    uint64_t size = round_up(op->left, kBounceAlign);
    if (size > options_.bounce_budget) {
      // More than a driver that honours size_max * seg_max can send in one request.
      LOG_WARN("refused a %llu-byte request with misaligned buffers (bounce budget %llu bytes)",
               static_cast<unsigned long long>(op->left), static_cast<unsigned long long>(options_.bounce_budget));
      return finish(op, -EINVAL);
    }
    if (!bounce_waiters_.empty() || bounce_in_use_ + size > options_.bounce_budget) {
      bounce_waiters_.push_back(op);
      return;
    }
    if (!try_bounce(op)) return;
  }
  to_issue_.push_back(op);
}

// Swaps op's segments for one aligned buffer (gathering a write's data into it). False if
// memory ran out, in which case the op is finished with -ENOMEM.
bool Engine::try_bounce(Op* op) {
  uint64_t size = round_up(op->left, kBounceAlign);
  auto* buf = static_cast<uint8_t*>(std::aligned_alloc(kBounceAlign, size));
  if (buf == nullptr) {
    finish(op, -ENOMEM);
    return false;
  }
  op->bounce = buf;
  op->bounce_size = size;
  bounce_in_use_ += size;
  if (op->kind == Kind::kWrite) {
    uint64_t at = 0;
    for (const iovec& v : op->iov) {
      std::memcpy(buf + at, v.iov_base, v.iov_len);
      at += v.iov_len;
    }
  } else {
    op->copy_back.reserve(op->iov.size());
    for (const iovec& v : op->iov) op->copy_back.emplace_back(static_cast<uint8_t*>(v.iov_base), v.iov_len);
  }
  op->iov.assign(1, iovec{buf, op->left});
  op->iov_pos = 0;
  return true;
}

void Engine::transferred(Op* op, int res) {
  // res > 0 here. Zero bytes with bytes left means the file ended (it shrank under us).
  if (res == 0) return finish(op, -EIO);
  uint64_t n = static_cast<uint64_t>(res);
  MOSS_ASSERT(n <= op->left);
  op->left -= n;
  op->offset += n;
  if (op->kind != Kind::kZeroWrite) {
    while (n > 0) {
      MOSS_ASSERT(op->iov_pos < op->iov.size());
      iovec& v = op->iov[op->iov_pos];
      uint64_t take = std::min<uint64_t>(n, v.iov_len);
      v.iov_base = static_cast<uint8_t*>(v.iov_base) + take;
      v.iov_len -= take;
      n -= take;
      if (v.iov_len == 0) ++op->iov_pos;
    }
  }
  if (op->left > 0) {
    // A short transfer, or the next IOV_MAX segments / zero chunk.
    to_issue_.push_back(op);
    return;
  }
  if (op->kind == Kind::kRead && op->bounce != nullptr) {
    uint64_t at = 0;
    for (auto s : op->copy_back) {
      std::memcpy(s.data(), op->bounce + at, s.size());
      at += s.size();
    }
  }
  finish(op, 0);
}

// ---- Submission ----

void Engine::prep(io_uring_sqe* sqe, Op& op) {
  const int fd = disk_.fd();
  switch (op.kind) {
    case Kind::kRead:
    case Kind::kWrite: {
      size_t n = std::min(kIovMax, op.iov.size() - op.iov_pos);
      MOSS_ASSERT(n > 0);
      if (op.kind == Kind::kRead) {
        io_uring_prep_readv2(sqe, fd, &op.iov[op.iov_pos], static_cast<unsigned>(n), op.offset, 0);
      } else {
        io_uring_prep_writev2(sqe, fd, &op.iov[op.iov_pos], static_cast<unsigned>(n), op.offset, op.sync ? RWF_DSYNC : 0);
      }
      break;
    }
    case Kind::kFlush:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
    case Kind::kDiscard:
    case Kind::kZeroPunch:
      io_uring_prep_fallocate(sqe, fd, kPunchHole, static_cast<off_t>(op.offset), static_cast<off_t>(op.left));
      break;
    case Kind::kZeroRange:
      io_uring_prep_fallocate(sqe, fd, kZeroRange, static_cast<off_t>(op.offset), static_cast<off_t>(op.left));
      break;
    case Kind::kZeroWrite: {
      uint64_t bytes = std::min<uint64_t>(op.left, kZeroChunk * kZeroIovs);
      size_t n = static_cast<size_t>((bytes + kZeroChunk - 1) / kZeroChunk);
      op.iov.assign(n, iovec{zeroes_, kZeroChunk});
      op.iov.back().iov_len = bytes - (n - 1) * kZeroChunk;
      io_uring_prep_writev2(sqe, fd, op.iov.data(), static_cast<unsigned>(n), op.offset, op.sync ? RWF_DSYNC : 0);
      break;
    }
  }
  io_uring_sqe_set_data(sqe, &op);
}

void Engine::submit_to_kernel() {
  int r = io_uring_submit(&ring_);
  // EBUSY/EAGAIN: the completion queue is backed up; what stays in the SQ goes with the next
  // submit, after the caller reaps.
  if (r < 0 && !transient(r)) ring_failed("submit", -r);
}

void Engine::issue_pending() {
  while (!to_issue_.empty()) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      submit_to_kernel();
      sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) break;  // Still full: retried after the next completions.
    }
    Op* op = to_issue_.front();
    to_issue_.pop_front();
    prep(sqe, *op);
    ++in_kernel_;
  }
  submit_to_kernel();
}

int Engine::submit_raw(const io_uring_sqe& raw) {
  MOSS_ASSERT(ops_live_ == 0 && in_kernel_ == 0);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  MOSS_ASSERT(sqe != nullptr);
  *sqe = raw;
  int r = io_uring_submit(&ring_);
  if (r < 0) return r;
  io_uring_cqe* cqe = nullptr;
  r = io_uring_wait_cqe(&ring_, &cqe);
  if (r < 0) return r;
  int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  // The completion also counted on the eventfd: leave nothing for the loop to wake up for.
  uint64_t count;
  (void)!::read(event_fd_.get(), &count, sizeof count);
  return res;
}

// ---- Completion ----

void Engine::on_cqe(Op* op, int res) {
  switch (op->kind) {
    case Kind::kRead:
    case Kind::kWrite:
    case Kind::kZeroWrite:
      if (transient(res)) {
        to_issue_.push_back(op);
        return;
      }
      if (res < 0) return finish(op, res);
      return transferred(op, res);
    case Kind::kFlush:
      return finish(op, res);
    case Kind::kDiscard:
      if (res == 0) return done_or_sync(op);
      if (res == -EOPNOTSUPP) {
        LOG_INFO("the disk cannot punch holes; discard requests are ignored");
        punch_ok_ = false;
      }
      // EOPNOTSUPP, or EINVAL (a block device wants coarser alignment): the hint is dropped.
      return finish(op, res == -EOPNOTSUPP || res == -EINVAL ? 0 : res);
    case Kind::kZeroPunch:
    case Kind::kZeroRange:
      if (res == 0) return done_or_sync(op);
      if (res != -EOPNOTSUPP && res != -EINVAL) return finish(op, res);
      if (res == -EOPNOTSUPP) {
        bool& ok = op->kind == Kind::kZeroPunch ? punch_ok_ : zero_range_ok_;
        if (ok) LOG_INFO("the disk does not support fallocate mode %s; writing zeroes instead",
                         op->kind == Kind::kZeroPunch ? "PUNCH_HOLE" : "ZERO_RANGE");
        ok = false;
      }
      // Next way down: ZERO_RANGE after PUNCH_HOLE, then plain writes of zeroes.
      op->kind = op->kind == Kind::kZeroPunch && zero_range_ok_ ? Kind::kZeroRange : Kind::kZeroWrite;
      to_issue_.push_back(op);
      return;
  }
}

void Engine::done_or_sync(Op* op) {
  if (!op->sync) return finish(op, 0);
  // fallocate has no RWF_DSYNC: make the change durable with an fdatasync before reporting.
  op->sync = false;
  op->kind = Kind::kFlush;
  to_issue_.push_back(op);
}

void Engine::finish(Op* op, int res) {
  bool freed = op->bounce != nullptr;
  if (freed) {
    std::free(op->bounce);
    bounce_in_use_ -= op->bounce_size;
  }
  finished_.emplace_back(op->tag, res);
  ops_.erase(op);
  if (!reaping_) {
    // Finished without the kernel: make the loop call poll().
    uint64_t one = 1;
    if (::write(event_fd_.get(), &one, sizeof one) < 0 && errno != EAGAIN) ring_failed("eventfd write", errno);
  }
  if (!freed) return;
  while (!bounce_waiters_.empty()) {
    Op* w = bounce_waiters_.front();
    if (bounce_in_use_ + round_up(w->left, kBounceAlign) > options_.bounce_budget) break;
    bounce_waiters_.pop_front();
    if (try_bounce(w)) to_issue_.push_back(w);
  }
}

void Engine::reap() {
  reaping_ = true;
  for (;;) {
    unsigned head;
    unsigned n = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      Op* op = static_cast<Op*>(io_uring_cqe_get_data(cqe));
      MOSS_ASSERT(ops_.count(op) == 1);
      --in_kernel_;
      on_cqe(op, cqe->res);
      ++n;
    }
    io_uring_cq_advance(&ring_, n);
    if (n > 0) continue;
    // Completions that did not fit the CQ wait in the kernel until we ask for them.
    if (!io_uring_cq_has_overflow(&ring_)) break;
    int r = io_uring_get_events(&ring_);
    if (r < 0 && !transient(r)) ring_failed("get_events", -r);
  }
  reaping_ = false;
}

size_t Engine::deliver(const DoneFn& done) {
  std::vector<std::pair<Tag, int>> list;
  list.swap(finished_);
  ops_live_ -= list.size();
  for (const auto& [tag, res] : list) done(tag, res);
  return list.size();
}

size_t Engine::poll(const DoneFn& done) {
  uint64_t count;
  if (::read(event_fd_.get(), &count, sizeof count) < 0 && errno != EAGAIN) ring_failed("eventfd read", errno);
  reap();
  issue_pending();
  return deliver(done);
}

size_t Engine::wait(const DoneFn& done) {
  MOSS_ASSERT(ops_live_ > 0);
  for (;;) {
    reap();
    issue_pending();
    if (!finished_.empty()) break;
    // Every live op that has not finished is in the kernel, queued behind a full SQ (so some
    // are in the kernel), or waiting for bounce memory an op in the kernel holds.
    MOSS_ASSERT(in_kernel_ > 0);
    int r = io_uring_submit_and_wait(&ring_, 1);
    if (r < 0 && !transient(r)) ring_failed("wait", -r);
  }
  return deliver(done);
}

}  // namespace moss::blk
