// lock_disk: two opens of one file are two open file descriptions, whose OFD locks conflict
// exactly as two processes' would, so one test process plays every party. The QEMU parties
// hold what qemu-storage-daemon 7.2 holds (seen in /proc/locks): a writable export read locks
// on bytes 100-101, a read-only one on byte 100; a -drive device also locks 201 and 203.
#include "base/disk_lock.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "base/fd.h"

namespace moss {
namespace {

class DiskLock : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/moss-disk-lock-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    close(fd);
    path_ = tmpl;
  }
  void TearDown() override { unlink(path_.c_str()); }
  // A new open of the disk: a party of its own.
  UniqueFd open_disk() { return UniqueFd(::open(path_.c_str(), O_RDWR | O_CLOEXEC)); }
  Result<void> lock(const UniqueFd& fd, bool read_only) { return lock_disk(fd.get(), read_only, "the disk " + path_); }
  // What QEMU holds: shared locks on single bytes.
  void hold_bytes(const UniqueFd& fd, std::initializer_list<off_t> bytes) {
    for (off_t b : bytes) {
      struct flock l {};
      l.l_type = F_RDLCK;
      l.l_whence = SEEK_SET;
      l.l_start = b;
      l.l_len = 1;
      ASSERT_EQ(fcntl(fd.get(), F_OFD_SETLK, &l), 0) << b;
    }
  }
  // QEMU's test before it goes on: is any lock held on `byte` (by anyone but `fd`'s open)?
  bool qemu_sees_lock(const UniqueFd& fd, off_t byte) {
    struct flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_start = byte;
    l.l_len = 1;
    EXPECT_EQ(fcntl(fd.get(), F_OFD_GETLK, &l), 0);
    return l.l_type != F_UNLCK;
  }
  std::string in_use() {
    return "the disk " + path_ + " is in use by another process (another moss or QEMU holds a lock on it), and a disk "
           "may have one writer or several read-only users, not both";
  }
  std::string path_;
};

TEST_F(DiskLock, ASecondWriterIsRefusedUntilTheFirstCloses) {
  UniqueFd a = open_disk(), b = open_disk();
  ASSERT_TRUE(lock(a, false).ok());
  auto r = lock(b, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, in_use());
  a.reset();  // The lock goes with the last fd of its open file.
  EXPECT_TRUE(lock(b, false).ok());
}

TEST_F(DiskLock, ReadersShareAndExcludeAWriterBothWays) {
  UniqueFd r1 = open_disk(), r2 = open_disk(), w = open_disk();
  ASSERT_TRUE(lock(r1, true).ok());
  ASSERT_TRUE(lock(r2, true).ok());
  EXPECT_FALSE(lock(w, false).ok());
  r1.reset();
  r2.reset();
  ASSERT_TRUE(lock(w, false).ok());
  UniqueFd r3 = open_disk();
  auto r = lock(r3, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, in_use());
}

TEST_F(DiskLock, AWholeFileWriteLockOfAnotherProgramIsRespected) {
  UniqueFd other = open_disk(), ours = open_disk();
  struct flock l {};
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  ASSERT_EQ(fcntl(other.get(), F_OFD_SETLK, &l), 0);
  EXPECT_FALSE(lock(ours, false).ok());
  EXPECT_FALSE(lock(ours, true).ok());
}

TEST_F(DiskLock, AQemuWriterAndMossExcludeEachOther) {
  // qemu-storage-daemon exporting the file writable: bytes 100 (read) and 101 (write).
  UniqueFd qemu = open_disk(), ours = open_disk();
  hold_bytes(qemu, {100, 101});
  EXPECT_FALSE(lock(ours, false).ok());
  UniqueFd ours_ro = open_disk();
  EXPECT_FALSE(lock(ours_ro, true).ok());  // Byte 101: someone writes.
  qemu.reset();
  ours.reset();
  ours_ro.reset();

  // moss first: a QEMU that would write fails to take its byte locks (moss writes) or sees
  // that writes are not shared (moss reads).
  UniqueFd writer = open_disk();
  ASSERT_TRUE(lock(writer, false).ok());
  UniqueFd q = open_disk();
  struct flock l {};
  l.l_type = F_RDLCK;
  l.l_whence = SEEK_SET;
  l.l_start = 100;
  l.l_len = 1;
  EXPECT_NE(fcntl(q.get(), F_OFD_SETLK, &l), 0);
  writer.reset();
  UniqueFd reader = open_disk();
  ASSERT_TRUE(lock(reader, true).ok());
  EXPECT_TRUE(qemu_sees_lock(q, 201));   // "write" not shared: a QEMU writer refuses.
  EXPECT_FALSE(qemu_sees_lock(q, 200));  // Reads are shared: a QEMU reader goes on.
  EXPECT_FALSE(qemu_sees_lock(q, 101));  // And moss is not writing.
}

TEST_F(DiskLock, AQemuReaderAndAMossReaderShare) {
  // A read-only -drive device: byte 100 held, writes and resizes not shared (201, 203).
  UniqueFd qemu = open_disk(), ours = open_disk();
  hold_bytes(qemu, {100, 201, 203});
  EXPECT_TRUE(lock(ours, true).ok());
  UniqueFd writer = open_disk();
  EXPECT_FALSE(lock(writer, false).ok());
}

}  // namespace
}  // namespace moss
