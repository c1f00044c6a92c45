#include "devices/blk/engine.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <liburing.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <vector>

#include "devices/blk/test_support.h"

namespace moss::blk {
namespace {

using testing::TempDir;

constexpr uint64_t kDiskBytes = 4 << 20;

// Page-aligned memory, like guest RAM; freed on destruction.
struct Aligned {
  explicit Aligned(size_t n) : size(n), p(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))) {}
  ~Aligned() { std::free(p); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  std::span<uint8_t> span(size_t off, size_t len) const { return {p + off, len}; }
  size_t size;
  uint8_t* p;
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return v;
}

std::vector<uint8_t> file_bytes(int fd, uint64_t off, size_t n) {
  // A separate buffered descriptor: what any other reader of the file would see.
  std::vector<uint8_t> v(n);
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  int f = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(f, 0);
  EXPECT_EQ(::pread(f, v.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
  ::close(f);
  return v;
}

class EngineTest : public ::testing::Test {
 protected:
  void open_disk(Engine::Options options = {}) {
    auto d = Disk::open(dir_.file("disk.img", kDiskBytes), false);
    ASSERT_TRUE(d.ok()) << d.error().message;
    disk_ = std::make_unique<Disk>(std::move(*d));
    auto e = Engine::create(*disk_, options);
    ASSERT_TRUE(e.ok()) << e.error().message;
    engine_ = std::move(*e);
  }

  // Submits what is queued and collects results until `n` operations have finished.
  std::map<Engine::Tag, int> run(size_t n) {
    engine_->submit();
    std::map<Engine::Tag, int> out;
    while (out.size() < n) {
      engine_->wait([&](Engine::Tag t, int r) { EXPECT_TRUE(out.emplace(t, r).second) << "tag " << t << " twice"; });
    }
    EXPECT_EQ(engine_->in_flight(), 0u);
    return out;
  }
  int run_one() {
    auto r = run(1);
    return r.begin()->second;
  }

  void write_bytes(uint64_t off, const std::vector<uint8_t>& data) {
    Aligned buf(data.size());
    std::memcpy(buf.p, data.data(), data.size());
    std::span<const uint8_t> s(buf.p, data.size());
    engine_->write(1, off, std::span<const std::span<const uint8_t>>(&s, 1), false);
    ASSERT_EQ(run_one(), 0);
  }
  std::vector<uint8_t> read_bytes(uint64_t off, size_t n) {
    Aligned buf(n);
    std::span<uint8_t> s = buf.span(0, n);
    engine_->read(2, off, std::span<const std::span<uint8_t>>(&s, 1));
    EXPECT_EQ(run_one(), 0);
    return std::vector<uint8_t>(buf.p, buf.p + n);
  }

  TempDir dir_;
  std::unique_ptr<Disk> disk_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, WriteFlushReadRoundTrip) {
  open_disk();
  auto data = pattern(64 * 1024, 3);
  write_bytes(8192, data);
  engine_->flush(9);
  EXPECT_EQ(run_one(), 0);
  EXPECT_EQ(read_bytes(8192, data.size()), data);
  EXPECT_EQ(file_bytes(disk_->fd(), 8192, data.size()), data);
}

TEST_F(EngineTest, ScatteredSegmentsLandInOrder) {
  open_disk();
  Aligned mem(3 * 4096);
  auto data = pattern(3 * 4096, 11);
  std::memcpy(mem.p, data.data(), data.size());
  // Three segments given out of memory order: disk order is segment order.
  std::vector<std::span<const uint8_t>> segs = {{mem.p + 8192, 4096}, {mem.p, 4096}, {mem.p + 4096, 4096}};
  engine_->write(5, 0, segs, false);
  ASSERT_EQ(run_one(), 0);
  std::vector<uint8_t> expect(data.begin() + 8192, data.end());
  expect.insert(expect.end(), data.begin(), data.begin() + 8192);
  EXPECT_EQ(file_bytes(disk_->fd(), 0, expect.size()), expect);
}

TEST_F(EngineTest, MisalignedBuffersAreBounced) {
  open_disk();
  Aligned mem(8192);
  auto data = pattern(1024, 5);
  // Odd addresses and lengths that are not sector multiples: O_DIRECT would refuse them.
  std::memcpy(mem.p + 1, data.data(), 100);
  std::memcpy(mem.p + 2001, data.data() + 100, 924);
  std::vector<std::span<const uint8_t>> w = {{mem.p + 1, 100}, {mem.p + 2001, 924}};
  engine_->write(1, 512, w, false);
  ASSERT_EQ(run_one(), 0);
  EXPECT_EQ(file_bytes(disk_->fd(), 512, 1024), data);

  Aligned out(8192);
  std::memset(out.p, 0xaa, 8192);
  std::vector<std::span<uint8_t>> r = {{out.p + 3, 700}, {out.p + 4001, 324}};
  engine_->read(2, 512, r);
  ASSERT_EQ(run_one(), 0);
  EXPECT_EQ(0, std::memcmp(out.p + 3, data.data(), 700));
  EXPECT_EQ(0, std::memcmp(out.p + 4001, data.data() + 700, 324));
  EXPECT_EQ(out.p[2], 0xaa);  // Nothing outside the segments was touched.
  EXPECT_EQ(out.p[703], 0xaa);
  EXPECT_EQ(out.p[4325], 0xaa);
  EXPECT_EQ(engine_->bounce_in_use(), 0u);
}

TEST_F(EngineTest, BounceBudgetQueuesRequestsAndRefusesOversizedOnes) {
  open_disk(Engine::Options{256, 8192});
  if (!disk_->info().direct) GTEST_SKIP() << "no O_DIRECT under /tmp: nothing is bounced";
  Aligned mem(80 * 1024);
  auto data = pattern(8 * 4096, 9);
  std::memcpy(mem.p + 1, data.data(), data.size());
  // Eight misaligned 4 KiB writes with room for two bounce buffers at a time.
  std::vector<std::span<const uint8_t>> segs;
  for (int i = 0; i < 8; i++) segs.emplace_back(mem.p + 1 + i * 4096, 4096);
  for (int i = 0; i < 8; i++) engine_->write(100 + i, i * 4096, std::span(&segs[i], 1), false);
  EXPECT_LE(engine_->bounce_in_use(), 8192u);
  auto results = run(8);
  for (int i = 0; i < 8; i++) EXPECT_EQ(results[100 + i], 0);
  EXPECT_EQ(file_bytes(disk_->fd(), 0, 8 * 4096), data);
  // One request bigger than the whole budget can never be bounced.
  std::span<const uint8_t> big(mem.p + 1, 3 * 4096);
  engine_->write(7, 0, std::span(&big, 1), false);
  EXPECT_EQ(run_one(), -EINVAL);
}

TEST_F(EngineTest, ManyInFlightEachReportedOnce) {
  open_disk(Engine::Options{32, 64 << 20});  // A small SQ: the engine must submit in batches.
  constexpr int kOps = 200;
  Aligned mem(kOps * 4096);
  for (int i = 0; i < kOps; i++) std::memset(mem.p + i * 4096, i, 4096);
  std::vector<std::span<const uint8_t>> segs;
  for (int i = 0; i < kOps; i++) segs.emplace_back(mem.p + i * 4096, 4096);
  for (int i = 0; i < kOps; i++) engine_->write(1000 + i, uint64_t(kOps - 1 - i) * 4096, std::span(&segs[i], 1), false);
  EXPECT_EQ(engine_->in_flight(), size_t(kOps));
  auto results = run(kOps);
  ASSERT_EQ(results.size(), size_t(kOps));
  for (auto& [tag, res] : results) EXPECT_EQ(res, 0) << tag;
  auto back = file_bytes(disk_->fd(), 0, kOps * 4096);
  for (int i = 0; i < kOps; i++) EXPECT_EQ(back[uint64_t(kOps - 1 - i) * 4096 + 17], uint8_t(i));
}

TEST_F(EngineTest, MoreSegmentsThanIovMaxAreSplit) {
  open_disk();
  constexpr int kSegs = 2500;  // > IOV_MAX (1024)
  Aligned mem(kSegs * 512);
  auto data = pattern(kSegs * 512, 1);
  std::memcpy(mem.p, data.data(), data.size());
  std::vector<std::span<const uint8_t>> w;
  for (int i = 0; i < kSegs; i++) w.emplace_back(mem.p + i * 512, 512);
  engine_->write(1, 4096, w, false);
  ASSERT_EQ(run_one(), 0);
  EXPECT_EQ(file_bytes(disk_->fd(), 4096, data.size()), data);
  Aligned out(kSegs * 512);
  std::vector<std::span<uint8_t>> r;
  for (int i = 0; i < kSegs; i++) r.emplace_back(out.p + i * 512, 512);
  engine_->read(2, 4096, r);
  ASSERT_EQ(run_one(), 0);
  EXPECT_EQ(0, std::memcmp(out.p, data.data(), data.size()));
}

TEST_F(EngineTest, ReadPastAFileThatShrankIsAnError) {
  open_disk();
  ASSERT_EQ(::ftruncate(disk_->fd(), 4096), 0);
  Aligned out(4096);
  std::span<uint8_t> s = out.span(0, 4096);
  engine_->read(1, 1 << 20, std::span(&s, 1));
  EXPECT_EQ(run_one(), -EIO);
}

TEST_F(EngineTest, DiscardAndWriteZeroesReadBackAsZeroes) {
  open_disk();
  auto data = pattern(256 * 1024, 7);
  write_bytes(0, data);
  engine_->discard(1, 64 * 1024, 64 * 1024, false);
  EXPECT_EQ(run_one(), 0);
  engine_->write_zeroes(2, 128 * 1024, 32 * 1024, false, false);
  EXPECT_EQ(run_one(), 0);
  engine_->write_zeroes(3, 192 * 1024, 32 * 1024, true, true);
  EXPECT_EQ(run_one(), 0);
  auto back = file_bytes(disk_->fd(), 0, data.size());
  auto zero = [&](size_t from, size_t n) {
    for (size_t i = from; i < from + n; i++) {
      if (back[i] != 0) return false;
    }
    return true;
  };
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), 64 * 1024));
  if (engine_->punch_hole_supported()) {
    EXPECT_TRUE(zero(64 * 1024, 64 * 1024));
  }
  EXPECT_TRUE(zero(128 * 1024, 32 * 1024));
  EXPECT_EQ(0, std::memcmp(back.data() + 160 * 1024, data.data() + 160 * 1024, 32 * 1024));
  EXPECT_TRUE(zero(192 * 1024, 32 * 1024));
  EXPECT_EQ(0, std::memcmp(back.data() + 224 * 1024, data.data() + 224 * 1024, 32 * 1024));
}

TEST_F(EngineTest, DiscardDeallocatesOnAFileSystemThatCanPunchHoles) {
  open_disk();
  write_bytes(0, pattern(1 << 20, 2));
  struct stat before, after;
  ASSERT_EQ(::fstat(disk_->fd(), &before), 0);
  engine_->discard(1, 0, 1 << 20, false);
  EXPECT_EQ(run_one(), 0);
  ASSERT_EQ(::fstat(disk_->fd(), &after), 0);
  if (!engine_->punch_hole_supported()) GTEST_SKIP() << "the file system under /tmp cannot punch holes";
  EXPECT_LT(after.st_blocks, before.st_blocks);
}

TEST(BlkEngine, WriteZeroesFallsBackToWritingWhereZeroRangeIsMissing) {
  int raw = ::memfd_create("moss-blk-engine-test", MFD_CLOEXEC);
  ASSERT_GE(raw, 0);
  ASSERT_EQ(::ftruncate(raw, 32 << 20), 0);
  if (::fallocate(raw, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0) {
    ::close(raw);
    GTEST_SKIP() << "this kernel's tmpfs supports ZERO_RANGE: the fallback cannot be reached here";
  }
  auto disk = Disk::from_fd(UniqueFd(raw), false, "a memfd");
  ASSERT_TRUE(disk.ok()) << disk.error().message;
  auto engine = Engine::create(*disk);
  ASSERT_TRUE(engine.ok());
  std::vector<uint8_t> ones(20 << 20, 0xff);
  ASSERT_EQ(::pwrite(disk->fd(), ones.data(), ones.size(), 0), static_cast<ssize_t>(ones.size()));
  // 18 MiB: more than one 16 MiB write of zeroes, from an odd sector.
  (*engine)->write_zeroes(1, 512, 18 << 20, false, false);
  (*engine)->submit();
  int result = 1;
  while ((*engine)->in_flight() > 0) (*engine)->wait([&](Engine::Tag, int r) { result = r; });
  EXPECT_EQ(result, 0);
  EXPECT_FALSE((*engine)->zero_range_supported());
  std::vector<uint8_t> back(ones.size());
  ASSERT_EQ(::pread(disk->fd(), back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
  EXPECT_EQ(back[511], 0xff);
  for (size_t i = 512; i < 512 + (18u << 20); i += 4093) ASSERT_EQ(back[i], 0) << i;
  EXPECT_EQ(back[512 + (18u << 20) - 1], 0);
  EXPECT_EQ(back[512 + (18u << 20)], 0xff);
}

TEST_F(EngineTest, CompletionFdSignalsFinishedWork) {
  open_disk();
  Aligned out(4096);
  std::span<uint8_t> s = out.span(0, 4096);
  engine_->read(1, 0, std::span(&s, 1));
  engine_->submit();
  pollfd p{engine_->completion_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  size_t n = 0;
  while (n == 0) {
    n += engine_->poll([](Engine::Tag t, int r) {
      EXPECT_EQ(t, 1u);
      EXPECT_EQ(r, 0);
    });
  }
  EXPECT_EQ(engine_->in_flight(), 0u);
  // Work finished without the kernel (a discard on a disk marked unable to punch is not
  // one of those here, so use a zero-length read) also wakes the loop.
  engine_->read(2, 0, {});
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  EXPECT_EQ(engine_->poll([](Engine::Tag t, int r) {
    EXPECT_EQ(t, 2u);
    EXPECT_EQ(r, 0);
  }), 1u);
}

// The engine's ring is the worker's way around its seccomp policy unless the ring itself is
// restricted: an IORING_OP_SOCKET or OPENAT is no system call. Each of these is what a
// compromised worker would submit; each must fail with EACCES, while the engine's own kind of
// operation still works through the same path.
TEST_F(EngineTest, RingRefusesEveryOperationButTheEnginesOwn) {
  open_disk();
  io_uring_sqe sqe{};
  auto expect_refused = [&](const char* what) {
    EXPECT_EQ(engine_->submit_raw(sqe), -EACCES) << what;
  };
  io_uring_prep_socket(&sqe, AF_INET, SOCK_STREAM, 0, 0);
  expect_refused("IORING_OP_SOCKET (AF_INET)");
  io_uring_prep_socket(&sqe, AF_VSOCK, SOCK_STREAM, 0, 0);
  expect_refused("IORING_OP_SOCKET (AF_VSOCK)");
  io_uring_prep_socket(&sqe, AF_NETLINK, SOCK_DGRAM, 0, 0);
  expect_refused("IORING_OP_SOCKET (AF_NETLINK)");
  io_uring_prep_openat(&sqe, AT_FDCWD, "/etc/passwd", O_RDONLY, 0);
  expect_refused("IORING_OP_OPENAT");
  io_uring_prep_connect(&sqe, engine_->completion_fd(), nullptr, 0);
  expect_refused("IORING_OP_CONNECT");
  io_uring_prep_accept(&sqe, engine_->completion_fd(), nullptr, nullptr, 0);
  expect_refused("IORING_OP_ACCEPT");
  // The engine's own operations, but with SQE flags it never sets (here: async).
  Aligned buf(4096);
  iovec v{buf.p, 4096};
  io_uring_prep_readv(&sqe, disk_->fd(), &v, 1, 0);
  sqe.flags |= IOSQE_ASYNC;
  expect_refused("IORING_OP_READV with IOSQE_ASYNC");
  // The same readv as the engine submits it is allowed.
  io_uring_prep_readv(&sqe, disk_->fd(), &v, 1, 0);
  EXPECT_EQ(engine_->submit_raw(sqe), 4096);
  // No registration after the ring is enabled: no new files, buffers, eventfds, restrictions.
  for (unsigned op : {IORING_REGISTER_FILES_UPDATE, IORING_UNREGISTER_FILES, IORING_REGISTER_BUFFERS,
                      IORING_REGISTER_PROBE, IORING_REGISTER_PERSONALITY, IORING_REGISTER_RESTRICTIONS}) {
    errno = 0;
    EXPECT_EQ(::syscall(SYS_io_uring_register, engine_->ring_fd(), op, nullptr, 0), -1) << "register op " << op;
    EXPECT_EQ(errno, EACCES) << "register op " << op;
  }
}

// The control for the test above: the same IORING_OP_SOCKET on a ring without restrictions
// makes a socket here, so the EACCES above is the restriction's doing.
TEST(BlkEngine, AnUnrestrictedRingWouldMakeTheSocket) {
  io_uring ring;
  ASSERT_EQ(io_uring_queue_init(4, &ring, 0), 0);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_socket(sqe, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0, 0);
  ASSERT_EQ(io_uring_submit(&ring), 1);
  io_uring_cqe* cqe = nullptr;
  ASSERT_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
  int res = cqe->res;
  io_uring_cqe_seen(&ring, cqe);
  io_uring_queue_exit(&ring);
  if (res == -EINVAL) GTEST_SKIP() << "this kernel has no IORING_OP_SOCKET (before 5.19)";
  EXPECT_GE(res, 0) << std::strerror(-res);
  if (res >= 0) ::close(res);
}

}  // namespace
}  // namespace moss::blk
