#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <vector>

#include "base/file.h"
#include "base/guest_memory.h"
#include "base/syscall.h"

namespace moss {
namespace {

TEST(GuestMemory, AccessInsideRegionSucceeds) {
  std::vector<uint8_t> a(4096), b(4096);
  GuestMemory mem({{0, a.size(), a.data()}, {0x100000, b.size(), b.data()}});
  ASSERT_TRUE(mem.write_obj<uint32_t>(0x100ffc, 0xdeadbeef).ok());
  auto v = mem.read_obj<uint32_t>(0x100ffc);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0xdeadbeefu);
  EXPECT_EQ(mem.total_size(), 8192u);
}

TEST(GuestMemory, AccessOutsideOrStraddlingIsRejected) {
  std::vector<uint8_t> a(4096);
  GuestMemory mem({{0x1000, a.size(), a.data()}});
  EXPECT_FALSE(mem.slice(0, 1).ok());
  EXPECT_FALSE(mem.slice(0x1ffe, 4).ok());           // Runs past the end.
  EXPECT_FALSE(mem.slice(0x2000, 1).ok());
  EXPECT_FALSE(mem.slice(~0ull - 1, 4).ok());        // Overflowing range.
  EXPECT_TRUE(mem.slice(0x1000, 4096).ok());
}

TEST(Syscall, ErrorNamesTheCallAndErrno) {
  auto r = MOSS_SYS(::open("/nonexistent/x", O_RDONLY));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("open(\"/nonexistent/x\", O_RDONLY) failed"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(r.error().err, ENOENT);
}

TEST(File, HeadAndExactReadsRespectTheFileSize) {
  int fd = memfd_create("t", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  UniqueFd owned(fd);
  ASSERT_TRUE(write_all(fd, "hello", 5).ok());
  auto head = read_file_head(fd, 3, "the file");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(std::string(head->begin(), head->end()), "hel");
  EXPECT_EQ(read_file_head(fd, 100, "the file")->size(), 5u);
  uint8_t buf[4];
  ASSERT_TRUE(pread_exact(fd, 1, buf, "the file").ok());
  EXPECT_EQ(buf[3], 'o');
  auto past = pread_exact(fd, 2, buf, "the file");
  ASSERT_FALSE(past.ok());
  EXPECT_NE(past.error().message.find("the file ended early"), std::string::npos);
}

TEST(File, NonRegularFilesAreRefused) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  UniqueFd owned(fd);
  auto r = regular_file_size(fd, "the initrd");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the initrd is not a regular file");
}

TEST(File, FileTypesAreNamedForMessages) {
  EXPECT_EQ(describe_file_type(S_IFIFO | 0644), "a FIFO");
  EXPECT_EQ(describe_file_type(S_IFDIR | 0755), "a directory");
  EXPECT_EQ(describe_file_type(S_IFCHR), "a character device");
  EXPECT_EQ(describe_file_type(S_IFREG | 0600), "a regular file");
}

}  // namespace
}  // namespace moss
