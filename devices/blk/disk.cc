#include "devices/blk/disk.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdio>

#include "base/disk_lock.h"
#include "base/log.h"
#include "base/syscall.h"
#include "devices/blk/request.h"

namespace moss::blk {
namespace {

constexpr uint32_t kMaxPhysicalBlock = 64 * 1024;

// A power of two in [512, 64 KiB]: what virtio's physical_block_exp can express sensibly.
uint32_t clamp_block(uint64_t v) {
  if (v < kSectorSize || !std::has_single_bit(v)) return kSectorSize;
  return static_cast<uint32_t>(std::min<uint64_t>(v, kMaxPhysicalBlock));
}

// Direct I/O needs buffers, file offsets and segment lengths aligned (statx STATX_DIOALIGN).
// Guests send 512-byte offsets and lengths, so O_DIRECT is usable only if the offset
// alignment is at most 512; the memory alignment is handled by bouncing. Returns the memory
// alignment, or 0 if O_DIRECT must not be used.
uint32_t direct_mem_align(int fd, bool block_device, const std::string& what) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN)) {
    if (stx.stx_dio_offset_align == 0 || stx.stx_dio_offset_align > kSectorSize) {
      LOG_INFO("%s needs %u-byte aligned direct I/O; using the page cache", what.c_str(), stx.stx_dio_offset_align);
      return 0;
    }
    return std::max<uint32_t>(stx.stx_dio_mem_align, 1);
  }
  // Kernels before 6.1, and block devices before 6.11, do not report it: a block device needs
  // its logical block size for both; for a file we cannot know, so stay safe.
  if (block_device) {
    int lbs = 0;
    if (::ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0 && static_cast<uint64_t>(lbs) <= kSectorSize) {
      return static_cast<uint32_t>(lbs);
    }
  }
  LOG_INFO("%s does not report its direct I/O alignment; using the page cache", what.c_str());
  return 0;
}

// Turns O_DIRECT on if the file takes it and its alignment suits guest requests; leaves the
// fd buffered otherwise. Returns the memory alignment, 0 when buffered.
Result<uint32_t> enable_direct(int fd, bool block_device, const std::string& what) {
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(fd, F_GETFL)));
  if (!(flags & O_DIRECT)) {
    if (::fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) {
      // EINVAL: the file system has no direct I/O (tmpfs before 6.6, FUSE without it).
      LOG_INFO("%s does not support O_DIRECT; using the page cache", what.c_str());
      return uint32_t{0};
    }
  }
  uint32_t align = direct_mem_align(fd, block_device, what);
  if (align == 0) MOSS_TRY_VOID(MOSS_SYS(::fcntl(fd, F_SETFL, flags & ~O_DIRECT)));
  return align;
}

}  // namespace

std::string serial_for(dev_t dev, ino_t ino) {
  // FNV-1a over the two numbers: stable, spreads small inode numbers over all 16 digits.
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; i++) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ull;
    }
  };
  mix(static_cast<uint64_t>(dev));
  mix(static_cast<uint64_t>(ino));
  char buf[24];
  std::snprintf(buf, sizeof buf, "moss%016" PRIx64, h);
  return buf;
}

Result<Disk> Disk::open(const std::string& path, bool read_only) {
  // No O_DIRECT here: from_fd turns it on (F_SETFL makes the same check open would) so that
  // an fd from elsewhere and a path take one code path.
  int raw = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (raw < 0) {
    return sys_error("open", "the disk " + path + (read_only ? " for reading" : " for reading and writing"));
  }
  UniqueFd fd(raw);
  // One disk, one writer (base/disk_lock.h): another moss-blk, a moss run or QEMU using it
  // is refused. The lock lasts as long as this open file.
  MOSS_TRY_VOID(lock_disk(fd.get(), read_only, "the disk " + path));
  return from_fd(std::move(fd), read_only, "the disk " + path);
}

Result<Disk> Disk::from_fd(UniqueFd fd, bool read_only, const std::string& what) {
  struct stat st;
  MOSS_TRY_VOID(MOSS_SYS(::fstat(fd.get(), &st)));
  DiskInfo info;
  info.read_only = read_only;
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(fd.get(), F_GETFL)));
  if (!read_only && (flags & O_ACCMODE) != O_RDWR) {
    return make_error(what + " is not open for reading and writing (use --readonly)");
  }
  uint64_t size = 0;
  if (S_ISBLK(st.st_mode)) {
    info.block_device = true;
    MOSS_TRY_VOID(MOSS_SYS(::ioctl(fd.get(), BLKGETSIZE64, &size)));
    unsigned int pbs = 0, opt = 0;
    if (::ioctl(fd.get(), BLKPBSZGET, &pbs) == 0) info.physical_block_size = clamp_block(pbs);
    if (::ioctl(fd.get(), BLKIOOPT, &opt) == 0) info.opt_io_size = opt;
    info.serial = serial_for(st.st_rdev, 0);  // The device number is the stable identity.
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
    // The file system block: the unit below which writes cost a read-modify-write.
    info.physical_block_size = clamp_block(static_cast<uint64_t>(st.st_blksize));
    info.serial = serial_for(st.st_dev, st.st_ino);
  } else {
    return make_error(what + " is neither a regular file nor a block device");
  }
  info.capacity_sectors = size / kSectorSize;
  info.size_bytes = info.capacity_sectors * kSectorSize;
  if (size % kSectorSize != 0) {
    LOG_WARN("%s is %" PRIu64 " bytes, not a multiple of 512; the guest sees only the first %" PRIu64, what.c_str(),
             size, info.size_bytes);
  }
  MOSS_TRY(uint32_t align, enable_direct(fd.get(), info.block_device, what));
  info.direct = align != 0;
  info.dio_mem_align = info.direct ? align : 1;
  LOG_INFO("%s: %" PRIu64 " sectors, %s, %s", what.c_str(), info.capacity_sectors, read_only ? "read-only" : "read-write",
           info.direct ? "O_DIRECT" : "page cache");
  return Disk(std::move(fd), std::move(info));
}

}  // namespace moss::blk
