#include "devices/blk/disk.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

#include "devices/blk/test_support.h"

namespace moss::blk {
namespace {

using testing::TempDir;

TEST(BlkDisk, RegularFileCapacityIsWholeSectors) {
  TempDir dir;
  auto disk = Disk::open(dir.file("img", 1024 * 1024 + 300), false);
  ASSERT_TRUE(disk.ok()) << disk.error().message;
  EXPECT_EQ(disk->info().capacity_sectors, 2048u);
  EXPECT_EQ(disk->info().size_bytes, 2048u * 512);
  EXPECT_FALSE(disk->info().block_device);
  EXPECT_FALSE(disk->info().read_only);
  EXPECT_GE(disk->info().physical_block_size, 512u);
  EXPECT_EQ(disk->info().physical_block_size & (disk->info().physical_block_size - 1), 0u);
}

TEST(BlkDisk, DirectIoIsUsedWhenTheFileSystemTakesIt) {
  TempDir dir;
  std::string p = dir.file("img", 1 << 20);
  auto disk = Disk::open(p, false);
  ASSERT_TRUE(disk.ok()) << disk.error().message;
  int flags = ::fcntl(disk->fd(), F_GETFL);
  // Whatever the file system decided, the fd and the info agree.
  EXPECT_EQ((flags & O_DIRECT) != 0, disk->info().direct);
  if (!disk->info().direct) GTEST_SKIP() << "the file system under /tmp has no usable O_DIRECT";
  EXPECT_GE(disk->info().dio_mem_align, 1u);
  EXPECT_LE(disk->info().dio_mem_align, 4096u);
}

TEST(BlkDisk, ReadOnlyOpenNeedsOnlyReadPermission) {
  TempDir dir;
  std::string p = dir.file("img", 4096);
  ASSERT_EQ(::chmod(p.c_str(), 0400), 0);
  if (::access(p.c_str(), W_OK) == 0) GTEST_SKIP() << "running as root: permissions are not enforced";
  auto rw = Disk::open(p, false);
  ASSERT_FALSE(rw.ok());
  EXPECT_NE(rw.error().message.find(p), std::string::npos) << rw.error().message;
  auto ro = Disk::open(p, true);
  ASSERT_TRUE(ro.ok()) << ro.error().message;
  EXPECT_TRUE(ro->info().read_only);
}

TEST(BlkDisk, MissingFileErrorNamesThePath) {
  auto disk = Disk::open("/nonexistent/moss/disk.img", false);
  ASSERT_FALSE(disk.ok());
  EXPECT_NE(disk.error().message.find("/nonexistent/moss/disk.img"), std::string::npos);
  EXPECT_EQ(disk.error().err, ENOENT);
}

TEST(BlkDisk, DirectoryIsRefused) {
  TempDir dir;
  auto disk = Disk::open(dir.path(), true);
  ASSERT_FALSE(disk.ok());
  EXPECT_NE(disk.error().message.find("neither a regular file nor a block device"), std::string::npos)
      << disk.error().message;
}

TEST(BlkDisk, ReadOnlyFdCannotBackAWritableDisk) {
  TempDir dir;
  int fd = ::open(dir.file("img", 4096).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto disk = Disk::from_fd(UniqueFd(fd), false, "the test disk");
  ASSERT_FALSE(disk.ok());
  EXPECT_NE(disk.error().message.find("the test disk is not open for reading and writing"), std::string::npos);
}

TEST(BlkDisk, MemfdWorksThroughFromFd) {
  int fd = ::memfd_create("moss-blk-disk-test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 8192), 0);
  auto disk = Disk::from_fd(UniqueFd(fd), false, "a memfd");
  ASSERT_TRUE(disk.ok()) << disk.error().message;
  EXPECT_EQ(disk->info().capacity_sectors, 16u);
}

TEST(BlkDisk, SerialIsTwentyStableCharactersPerFile) {
  std::string a = serial_for(0x803, 12);
  EXPECT_EQ(a.size(), 20u);
  EXPECT_EQ(a.rfind("moss", 0), 0u);
  EXPECT_EQ(a, serial_for(0x803, 12));
  EXPECT_NE(a, serial_for(0x803, 13));
  EXPECT_NE(a, serial_for(0x804, 12));

  TempDir dir;
  std::string p = dir.file("img", 4096);
  auto d1 = Disk::open(p, true);
  auto d2 = Disk::open(p, true);
  ASSERT_TRUE(d1.ok() && d2.ok());
  EXPECT_EQ(d1->info().serial, d2->info().serial);
  auto other = Disk::open(dir.file("other", 4096), true);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->info().serial, d1->info().serial);
}

}  // namespace
}  // namespace moss::blk
